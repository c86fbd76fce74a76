"""Bounded samples of a training split: grouped, stratified, deterministic.

Training uses them where more rows buy nothing but time: the hyperparameter search runs on a
sample of at most ``training.search_max_rows`` rows (the winner is refit on the whole split), and
the KNN imputer keeps at most ``transform.imputer_max_rows`` rows as its donors.

A sample is chosen from the rows' **content hashes** (:func:`netsec_tasks.split.row_hashes`, the
ones that decide the train/test side):

- *grouped*: identical rows share a hash and are taken or left together, so a sample never
  splits a group of duplicates (a CV fold over the sample could not put copies on both sides);
- *stratified*: each label gets its share of the bound (``max_rows * label rows / rows``);
- *deterministic*: a group is taken in the order of a uniform score computed from its hash and
  the seed (:func:`netsec_tasks.split.side_scores`, with a salt of its own), so the same rows and
  seed give the same sample on every machine, whatever the row order. Rows added later do not
  push out rows with a lower score unless the bound is reached.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from netsec_tasks.split import side_scores

# Salts keep the samples independent of the train/test split (which scores the same hashes).
SEARCH_SALT = 0x5EA4C4
IMPUTER_SALT = 0x1A9B7E
EARLY_STOPPING_SALT = 0xE5709


def bounded_sample(
    hashes: np.ndarray, labels, max_rows: int | None, *, seed: int, salt: int = SEARCH_SALT
) -> np.ndarray:
    """Boolean mask of at most ``max_rows`` rows: whole groups of equal ``hashes``, each label in
    proportion to its rows, lowest (hash, seed) scores first.

    ``hashes``: uint64 per row (n,); ``labels``: one label per row (n,). ``max_rows=None`` or
    ``>= n`` selects every row. A group larger than what is left of its label's share is skipped
    (a smaller one after it may still fit). The one exception to the bound: a label whose every
    group is larger than its share still gets its smallest group, so every label is sampled.
    Raises ValueError when ``max_rows < 1`` or the lengths differ.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if max_rows is None or max_rows >= n:
        return np.ones(n, dtype=bool)
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    codes, _ = pd.factorize(pd.Series(labels).reset_index(drop=True), use_na_sentinel=False)
    if len(codes) != n:
        raise ValueError(f"{len(codes)} labels for {n} hashes")
    scores = side_scores(hashes, seed ^ salt)
    chosen = np.zeros(n, dtype=bool)
    for code in range(int(codes.max()) + 1 if n else 0):
        rows = np.flatnonzero(codes == code)
        quota = max(1, int(round(max_rows * len(rows) / n)))
        # One entry per group of this label: its hash, size, and score (equal within a group).
        group_hash, first, size = np.unique(hashes[rows], return_index=True, return_counts=True)
        order = np.argsort(scores[rows][first], kind="stable")
        size = size[order]
        taken = np.cumsum(size) <= quota  # the prefix that fits
        stop = int(taken.sum())
        left = quota - int(size[:stop].sum())
        if stop < len(size) and left > 0:
            # Past the first group that does not fit: the smaller ones after it, in order.
            for i in range(stop, len(size)):
                if size[i] <= left:
                    taken[i] = True
                    left -= int(size[i])
                    if left == 0:
                        break
        if not taken.any():  # every group of this label is larger than its share
            taken[np.argmin(size)] = True
        chosen[rows] = np.isin(hashes[rows], group_hash[order][taken])
    return chosen
