"""Plain Python copies of report documents, for YAML and JSON (one helper for every report)."""

from __future__ import annotations

from typing import Any


def plain(obj: Any) -> Any:
    """A YAML/JSON-safe copy of ``obj``: dict keys as str, tuples as lists, numpy scalars (and
    anything else with ``.item()``) as Python numbers; other values unchanged."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj
