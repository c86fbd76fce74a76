"""The analysts' standing verdicts joined with the logged predictions they judge (the rows live
metrics are computed on), and the verdicts that could not be used.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd


def labelled_predictions(
    verdicts: pd.DataFrame, reader, *, since: dt.datetime, challenger: bool = False
) -> pd.DataFrame:
    """The standing verdicts on predictions made since ``since``, joined with the logged
    prediction they judge (``is_threat`` of the model as ``predicted``, ``model_version``; with
    ``challenger``, also ``challenger_version`` and ``challenger_predicted``, the challenger's
    decision on the row in shadow, None where none scored it). Verdicts whose id is not
    canonical (stored before ids were checked exactly) are left out (``monitor`` counts them in
    the report)."""
    from netsec_tasks.prediction_log import canonical_ids, request_time, rows_of

    shadow = ["challenger_version", "challenger_predicted"] if challenger else []
    empty = pd.DataFrame(columns=["prediction_id", "verdict", "predicted", "model_version", *shadow])
    if verdicts.empty:
        return empty
    good, _ = canonical_ids(verdicts["prediction_id"])
    recent = {pid: rid for pid, rid, _ in good if request_time(rid) >= since}
    verdicts = verdicts[verdicts["prediction_id"].isin(set(recent))]
    logged = rows_of(reader.find_requests(set(recent.values())), verdicts["prediction_id"])
    if logged.empty:
        return empty
    extra = ["challenger_version", "challenger_is_threat"] if challenger else []
    joined = verdicts.merge(
        logged[["prediction_id", "is_threat", "model_version", *extra]],
        on="prediction_id",
        how="inner",
        suffixes=("", "_logged"),
    )
    out = pd.DataFrame(
        {
            "prediction_id": joined["prediction_id"],
            "verdict": joined["is_threat"].astype(bool),
            "predicted": joined["is_threat_logged"].astype(int).astype(bool),
            "model_version": joined["model_version"].astype(str),
        }
    )
    if challenger:
        out["challenger_version"] = joined["challenger_version"]
        out["challenger_predicted"] = joined["challenger_is_threat"]
    return out


def unused_verdicts(verdicts: pd.DataFrame, labelled: pd.DataFrame, since: dt.datetime) -> dict[str, int]:
    """What the live figures could not use, so the report says it: verdicts on predictions of the
    window whose prediction this model's log does not hold, and verdicts whose id is not
    canonical."""
    from netsec_tasks.prediction_log import canonical_ids, request_time

    good, malformed = canonical_ids(verdicts["prediction_id"]) if len(verdicts) else ([], [])
    in_window = sum(request_time(rid) >= since for _, rid, _ in good)
    return {
        "verdicts_in_window": int(in_window),
        "without_logged_prediction": int(in_window - len(labelled)),
        "malformed_ids": len(malformed),
    }
