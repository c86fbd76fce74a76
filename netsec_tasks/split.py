"""The train/test split of a growing collection: a row's side never moves.

A row's side (train or test) is a function of its **content hash** and ``split.seed`` alone:
``test`` when a 53-bit uniform number derived from (hash, seed) is below ``split.test_size``.
So when rows are added night after night,

- no row ever changes side (the old rows' hashes did not change),
- identical rows (same feature and target values; the UCI file is half duplicates) share a hash
  and therefore a side, so an exact copy of a test row never sits in train,
- the Production model, trained on an earlier snapshot with the same seed, was trained on **no**
  row of today's test split: ``register`` checks this against the model's recorded training-row
  hashes (``netsec.train_hashes_uri``) instead of trusting it.

What this gives up: the split is stratified only in expectation. Each label's test share is a
binomial draw around ``test_size``; with n distinct rows its standard deviation is about
``sqrt(test_size (1 - test_size) * sum(group size^2)) / n`` (0.7 points on the UCI file,
measured by ``tests/test_split.py`` on growing prefixes). The one exception to "never moves": a
label that would otherwise have no row on one side gets its group nearest the threshold moved
across, so both sides hold every label; that only happens while a label has very few distinct
rows, and the record says so.

``split.duplicate_aware: false`` hashes each row together with its occurrence number among
identical rows (1st, 2nd, ... copy in collection order), so copies may straddle; the record's
``duplicate_leak_rows`` then counts test rows whose copy is in train. Occurrence numbers of an
append-only collection do not change as it grows, so sides still never move.

The content hash (:data:`ROW_HASH`) canonicalises values before hashing so that a column's storage
type cannot move a row: ``1``, ``1.0``, ``"1"`` and ``" 1 "`` hash alike, ``-0.0`` equals ``0.0``,
every null (None, NaN, empty text) hashes alike, and columns are combined in name order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from netsec_tasks.errors import DataError

ROW_HASH = "netsec-row-v1"
_TEXT_KEY = "netsec-row-v1..."  # 16 bytes: pandas' siphash key for text values
_NULL = np.uint64(0x6E756C6C6E756C6C)
_TEXT_SALT = np.uint64(0x7465787474657874)
_ROW_INIT = np.uint64(0xCBF29CE484222325)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixed uint64 -> uint64 map (vectorised)."""
    x = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _text_hash(values: np.ndarray) -> np.ndarray:
    return pd.util.hash_array(values.astype(object), hash_key=_TEXT_KEY, categorize=False)


def value_hashes(values: pd.Series) -> np.ndarray:
    """One uint64 per value, equal for values that mean the same (see the module doc)."""
    n = len(values)
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        text = np.zeros(n, bool)
        stripped = None
    else:
        obj = values.astype(object)
        stripped = obj.map(lambda v: v.strip() if isinstance(v, str) else v)
        blank = stripped.map(lambda v: isinstance(v, str) and v == "").to_numpy(bool)
        numbers = pd.to_numeric(stripped.where(~blank), errors="coerce").astype("float64").to_numpy()
        text = np.isnan(numbers) & ~obj.isna().to_numpy() & ~blank
    null = np.isnan(numbers) & ~text
    with np.errstate(invalid="ignore"):
        bits = (np.where(null | text, 0.0, numbers) + 0.0).view(np.uint64)  # -0.0 -> 0.0
    out = _splitmix(bits)
    out[null] = _NULL
    if stripped is not None and text.any():
        out[text] = _text_hash(stripped[text].astype(str).to_numpy()) ^ _TEXT_SALT
    return out


def row_hashes(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """uint64 content hash of each row over ``columns`` (combined in name order)."""
    h = np.full(len(frame), _ROW_INIT, dtype=np.uint64)
    for col in sorted(columns):
        name = _text_hash(np.array([col], dtype=object))[0]
        with np.errstate(over="ignore"):
            h = _splitmix(h ^ (value_hashes(frame[col]) + name))
    return h


def occurrence_hashes(hashes: np.ndarray, previous: dict[int, int] | None = None) -> np.ndarray:
    """Hash of (content hash, occurrence number among equal rows so far), for per-row sides.

    ``previous`` maps hash -> copies seen in earlier chunks and is updated in place, so a
    collection split chunk by chunk numbers copies exactly as if it were one frame.
    """
    seen = previous if previous is not None else {}
    occ = np.empty(len(hashes), dtype=np.uint64)
    for i, h in enumerate(hashes.tolist()):
        k = seen.get(h, 0)
        occ[i] = k
        seen[h] = k + 1
    with np.errstate(over="ignore"):
        return _splitmix(hashes ^ _splitmix(occ + np.uint64(1)))


def side_scores(hashes: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per hash, for ``seed``: test iff score < test_size."""
    salt = _splitmix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    mixed = _splitmix(np.asarray(hashes, dtype=np.uint64) ^ salt)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_rows(
    hashes: np.ndarray, labels, *, test_size: float, seed: int, source: str | None = None
) -> tuple[np.ndarray, list[str]]:
    """(test mask, notes): hash-decided sides, every label on both sides where possible.

    ``hashes`` are the values that decide sides (:func:`row_hashes`, or
    :func:`occurrence_hashes` of them for per-row sides). Raises DataError when train or test
    would be empty.
    """
    n = len(hashes)
    if n < 2:
        raise DataError(f"{n} row(s): too few to split into train and test", source=source)
    scores = side_scores(hashes, seed)
    test = scores < test_size
    notes: list[str] = []
    codes, uniques = pd.factorize(pd.Series(labels).reset_index(drop=True), use_na_sentinel=False)
    for code, label in enumerate(uniques):
        rows = codes == code
        groups = np.unique(hashes[rows])
        if len(groups) < 2:
            continue  # one distinct row: it can only be on one side
        if not test[rows].any():
            move = rows & (hashes == hashes[rows][np.argmin(scores[rows])])
            test[move] = True
            notes.append(
                f"label {label!r} had no test row: moved its {int(move.sum())} row(s) "
                "nearest the threshold to test"
            )
        elif test[rows].all():
            move = rows & (hashes == hashes[rows][np.argmax(scores[rows])])
            test[move] = False
            notes.append(
                f"label {label!r} had no training row: moved its {int(move.sum())} "
                "row(s) nearest the threshold to train"
            )
    if test.all() or not test.any():
        raise DataError(
            f"cannot split {n} rows ({len(np.unique(hashes))} distinct) into "
            f"non-empty train and test with test_size={test_size}",
            source=source,
        )
    return test, notes


def duplicate_leak_rows(content_hashes: np.ndarray, test_mask: np.ndarray) -> int:
    """Test rows whose exact copy (same features and target) is in train."""
    return int(np.isin(content_hashes[test_mask], content_hashes[~test_mask]).sum())


def lineage_hashes(frame: pd.DataFrame, schema) -> np.ndarray:
    """Content hashes of a validated split's rows (features + target), for lineage checks."""
    columns = [c for c in schema.features + [schema.target.column] if c in frame.columns]
    return row_hashes(frame, columns)


def lineage_frame(hashes: np.ndarray) -> pd.DataFrame:
    """The distinct hashes as the one-column frame stored as ``train_row_hashes``."""
    return pd.DataFrame({"row_hash": np.unique(np.asarray(hashes, dtype=np.uint64))})


def rows_in(hashes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mask of ``hashes`` that occur in ``reference`` (e.g. test rows a model was trained on)."""
    return np.isin(np.asarray(hashes, dtype=np.uint64), np.asarray(reference, dtype=np.uint64))
