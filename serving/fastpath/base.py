"""What every part of the fast path shares: the tolerance :data:`ATOL` of the predictors that are
not bit-identical, the :data:`Transform` type, and :class:`NotCompilable`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# |P(threat) fast - P(threat) Pipeline| allowed for predictors that are not bit-identical.
ATOL = 1e-5
Transform = Callable[[np.ndarray], np.ndarray]


class NotCompilable(Exception):
    """The pipeline contains a step the fast path does not reproduce."""
