"""The challenger in shadow: every logged row also scored by the challenger, off the request path.

A request answers with Production's decision only; it hands its rows to the prediction log with
a reference to the challenger loaded at that moment (``LogEntry.challenger``: one pointer, no
work). The log's writer thread calls :class:`ShadowScorer` on each batch before encoding it:
the batch's rows are stacked per challenger and scored in one call, so one-row traffic costs the
challenger a few microseconds per row instead of a prediction per request, and no response waits
for it. The challenger decides at its own threshold (``LoadedModel.predict``, the rule every door
uses); its version, decisions and P(threat) go into the same log documents as Production's, and
``/metrics`` counts them per version (role ``challenger``).

Rows the challenger cannot score are logged without its columns and counted
(``netsec_shadow_rows_total{outcome="failed"}``, a warning with the cause): the log never loses
Production's rows over the challenger. Rows dropped by a full log buffer are never scored, as
they are never logged.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from serving.inference import imputable
from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.prediction_writer import LogEntry

log = logging.getLogger("netsec.serving")


class ShadowScorer:
    """``scorer(entries) -> entries`` with the challenger's outputs filled in (see the module)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def __call__(self, entries: list[LogEntry]) -> list[LogEntry]:
        groups: dict[int, list[int]] = {}
        for i, entry in enumerate(entries):
            if entry.challenger is not None and entry.n_rows:
                groups.setdefault(id(entry.challenger), []).append(i)
        out = list(entries)
        for idx in groups.values():
            challenger = entries[idx[0]].challenger
            part = [entries[i] for i in idx]
            try:
                scored = score(challenger, part)
            except Exception as exc:  # Production's rows are logged regardless
                rows = sum(e.n_rows for e in part)
                self.metrics.count_shadow(challenger.version, "failed", rows)
                log.warning(
                    "challenger v%s could not score %d logged rows: %s: %s",
                    challenger.version,
                    rows,
                    type(exc).__name__,
                    str(exc)[:300],
                )
                continue
            for i, entry in zip(idx, scored):
                out[i] = entry
            self._count(challenger, part, scored)
        return out

    def _count(self, challenger: LoadedModel, before: list[LogEntry], after: list[LogEntry]) -> None:
        threats = sum(int(e.challenger_is_threat.sum()) for e in after if e.challenger_is_threat is not None)
        rows = sum(e.n_rows for e in after)
        disagree = sum(
            int(np.count_nonzero(np.asarray(e.is_threat) != e.challenger_is_threat))
            for e in after
            if e.challenger_is_threat is not None
        )
        m = self.metrics
        m.count_predictions(threats, rows, version=challenger.version, role="challenger")
        m.count_shadow(challenger.version, "scored", rows)
        if disagree:
            m.count_shadow(challenger.version, "disagreed", disagree)


def score(challenger: LoadedModel, entries: list[LogEntry]) -> list[LogEntry]:
    """``entries`` with ``challenger``'s decisions and P(threat) on their rows (one call)."""
    x = stack([challenger_input(challenger, e) for e in entries])
    is_threat, proba = challenger.predict(imputable(challenger, x))
    out, start = [], 0
    for e in entries:
        stop = start + e.n_rows
        out.append(
            replace(
                e,
                challenger=None,  # scored: the object need not live on in the entry
                challenger_version=challenger.version,
                challenger_is_threat=is_threat[start:stop],
                challenger_probability=proba[start:stop],
            )
        )
        start = stop
    return out


def challenger_input(challenger: LoadedModel, entry: LogEntry) -> Any:
    """The entry's rows as the challenger takes them: its feature order (the manager checked the
    set is Production's), a float matrix for a numeric model, else a DataFrame."""
    import pandas as pd

    wanted = list(challenger.features)
    x = entry.inputs
    if isinstance(x, np.ndarray):
        if list(entry.features) != wanted:
            position = {f: j for j, f in enumerate(entry.features)}
            x = x[:, [position[f] for f in wanted]]
        return x if challenger.numeric_only else pd.DataFrame(x, columns=wanted)
    return x[wanted]


def stack(parts: list[Any]) -> Any:
    """Row-wise concatenation of float matrices or DataFrames."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.vstack(parts)
    import pandas as pd

    return pd.concat(parts, ignore_index=True)
