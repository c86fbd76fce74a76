"""Hints about column names: how a name nearly matches another (case, an invisible character,
a typo) and whether a column is a row index written out with the data. For the contract's
messages about missing and unknown columns.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.table_io import INVISIBLE_CATEGORIES, visible


def _normalised(name: str) -> str:
    folded = unicodedata.normalize("NFKC", str(name))
    return "".join(
        c for c in folded if unicodedata.category(c) not in INVISIBLE_CATEGORIES and not c.isspace()
    ).lower()


def near_match(name: str, candidates: Iterable[str], *, reverse: bool = False) -> str | None:
    """How ``name`` nearly matches one of ``candidates``, in words, or None. ``reverse``: the
    candidates are what the file has (``found '...'``), else what the schema has."""
    candidates = [str(c) for c in candidates if str(c) != str(name)]
    key = _normalised(name)
    for c in candidates:
        if _normalised(c) == key:
            found, wanted = (c, name) if reverse else (name, c)
            invisible = [ch for ch in found if visible(ch) != ch]
            if invisible:
                what = ", ".join(f"U+{ord(ch):04X}" for ch in dict.fromkeys(invisible))
                return (
                    f"found '{visible(found)}': it holds the invisible character{'s' if len(invisible) > 1 else ''} "
                    f"{what}; retype the name as '{wanted}'"
                )
            if found.lower() == wanted.lower():
                return f"found '{found}': names are case-sensitive; write '{wanted}'"
            return f"found '{visible(found)}': write '{wanted}' exactly"
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.85)
    if close:
        return f"found '{visible(close[0])}'" if reverse else f"did you mean '{close[0]}'?"
    return None


def looks_like_index(name: Any, values: pd.Series | None = None) -> bool:
    """A column that pandas ``to_csv`` writes for the row index: no name, ``Unnamed: 0``,
    ``index``, or the values 0..n-1 / 1..n."""
    text = str(name).strip()
    if text == "" or text.lower().startswith("unnamed:") or text.lower() in ("index", "level_0"):
        return True
    if values is not None and len(values) > 1 and pd.api.types.is_integer_dtype(values):
        v = values.to_numpy()
        return bool((v == np.arange(len(v))).all() or (v == np.arange(1, len(v) + 1)).all())
    return False
