"""The base of every configuration section (unknown keys are refused, assignments validated), and
the value types several sections share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    # No docstring: a section's own docstring is its description (netsec config --describe).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# The confidence of a statistical decision (an interval, a one-sided test), as a probability:
# above 0.5 or it decides nothing, below 1 or no data ever suffices.
ConfidenceLevel = Annotated[float, Field(gt=0.5, lt=1)]
