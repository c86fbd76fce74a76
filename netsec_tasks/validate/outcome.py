"""What validation returns: one named check with its outcome (:class:`Check`) and the outcome
of validating one frame (:class:`FrameValidation`: clean rows, quarantined problems, checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

Status = Literal["pass", "warn", "fail"]


@dataclass
class Check:
    """One named check with its outcome; ``count`` is rows or columns affected."""

    name: str
    status: Status
    count: int = 0
    details: str = ""
    columns: list[str] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style read (``check.get("status")``), as the report YAML shows it."""
        return self.to_dict().get(key, default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "count": int(self.count),
            "details": self.details,
        }
        if self.columns:
            out["columns"] = list(self.columns)
        return out


@dataclass
class FrameValidation:
    """Outcome of validating one frame: typed clean rows, quarantined problems, every check."""

    source: str
    clean: pd.DataFrame
    invalid: pd.DataFrame  # one line per problem: split, row, column, value, reason
    checks: list[Check]
    rows_checked: int
    rows_invalid: int  # distinct rows quarantined
    # Rows per target label (as text) and whether the schema maps it to the threat class.
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Valid rows, when ``clean`` does not hold them (the step streams them to storage instead).
    valid_rows: int | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def invalid_share(self) -> float:
        return self.rows_invalid / self.rows_checked if self.rows_checked else 0.0

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "passed": self.passed,
            "rows_checked": int(self.rows_checked),
            "rows_valid": int(len(self.clean) if self.valid_rows is None else self.valid_rows),
            "rows_invalid": int(self.rows_invalid),
            "invalid_share": round(float(self.invalid_share), 6),
            **({"labels": self.labels} if self.labels else {}),
            "checks": [c.to_dict() for c in self.checks],
        }

    def failure_message(self, label: str | None = None) -> str:
        prefix = f"{label}: " if label else ""
        return "; ".join(f"{prefix}{c.details}" for c in self.failures)
