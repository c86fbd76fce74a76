"""The target column of a labelled file, typed and mapped to the threat class
(:class:`LabelCheck`, made by :meth:`netsec_tasks.contract.Contract.check_labels`), and the error
a door raises for labels the schema does not list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.contract.problems import ContractError, listed, show


@dataclass
class LabelCheck:
    """The target column of a labelled file, typed and mapped to the threat class.

    Rows are positions. ``null``: no label; ``uncoercible``: a label that is not of the target's
    dtype; ``unlisted``: a label the schema does not list (only in the ``positive`` form; in the
    "everything but" form every other label is a threat). ``is_threat`` holds for the usable
    rows (:attr:`usable`). ``counts``: rows per label (as text), with whether it is a threat;
    ``new_threat_labels``: labels of the "everything but" form the schema does not name.
    """

    column: str
    raw: pd.Series
    typed: pd.Series
    null: np.ndarray
    uncoercible: np.ndarray
    unlisted: np.ndarray
    unlisted_values: list[Any]
    is_threat: np.ndarray
    counts: dict[str, dict[str, Any]]
    new_threat_labels: list[str]
    vocabulary: list[Any] | None

    @property
    def usable(self) -> np.ndarray:
        return ~(self.null | self.uncoercible | self.unlisted)

    @property
    def refused(self) -> np.ndarray:
        """Rows whose label is present but unusable (untypable or unlisted)."""
        return self.uncoercible | self.unlisted

    def refused_summary(self) -> str:
        """``'spam' x2, '0' x3``: the refused labels as written, with their row counts."""
        values = self.raw[self.refused].map(lambda v: str(v).strip()).value_counts()
        return listed(f"{v!r} x{c}" for v, c in values.items())

    def error(self, *, source: str | None = None, where: Callable[[int], str] | None = None) -> ContractError:
        """The error a door raises for refused labels: names every unlisted label (and the first
        rows) and says how to list them."""
        rows = np.flatnonzero(self.refused)
        where = where or (lambda r: f"row {r}")
        problems = [
            {
                "row": int(r),
                "where": where(int(r)),
                "column": self.column,
                "value": show(self.raw.iloc[r]),
                "reason": "label not in the schema",
                "allowed": str(self.vocabulary),
            }
            for r in rows[:20]
        ]
        msg = (
            f"target column {self.column} has {len(rows)} label{'s' if len(rows) != 1 else ''} "
            f"outside labels {self.vocabulary}: {self.refused_summary()}. {UNLISTED_HINT}"
        )
        return ContractError(msg, problems=problems, columns=[self.column], source=source)


UNLISTED_HINT = (
    "List each label in the schema's target.labels (and the threat ones in "
    "target.positive), or write target.negative: [<benign labels>] alone so that every "
    "other label is a threat"
)
