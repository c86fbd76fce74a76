"""What a remote trigger may set for one training run, and its bounds.

A training run can be started by people and services that do not own the deployment: the
``netsec_training`` DAG's trigger form (its Params), and serving's ``POST /train`` (which
forwards its body as the run's conf). They may override a few config keys (:data:`RUN_PARAMS`)
within the config's own ranges, and within these bounds, which the configuration does not
impose on whoever deploys it:

- ``promotion_margin >= 0``: a trigger can make promotion stricter, never promote a model that
  does not beat Production (a negative margin would);
- ``min_score >=`` the configured ``registry.min_score``: a trigger may raise the floor, never
  lower it;
- ``source_path`` only under ``source.path_roots`` (absolute, no ``..`` segment, and where the
  worker resolves it, symlinks included): a trigger names data the deployment keeps for
  training, never ``/etc/passwd``. With no roots configured it cannot name a path at all.

:func:`param_bounds` gives the bounds as JSON-schema keywords for the DAG's Params (Airflow
refuses a run conf that breaks them before the run exists); :func:`check_run_params` checks them
again where they are applied (serving before forwarding, each DAG task before it reads its
config), raising :class:`ConfigError` that names the param, the value and the bound.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import ConfigError

# Run param -> the dotted config key it overrides for that run. None (or "") keeps the config's.
RUN_PARAMS = {
    "source": "source.kind",
    "source_path": "source.path",
    "n_iter": "training.n_iter",
    "cv_folds": "training.cv_folds",
    "candidates": "training.candidates",
    "promotion_margin": "registry.promotion_margin",
    "min_score": "registry.min_score",
}
MIN_PROMOTION_MARGIN = 0.0
_REGEX_SPECIAL = set(".^$*+?()[]{}|\\")


def _regex_literal(text: str) -> str:
    """``text`` as a regular-expression literal valid in Python and in ECMAScript with the
    ``u`` flag (Airflow's form validates in the browser): only the special characters are
    escaped (``re.escape`` also escapes ``-``, an error in a ``u`` regex)."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def _is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local_roots(cfg: PipelineConfig) -> list[str]:
    return [os.path.normpath(r.removeprefix("file://")) for r in cfg.source.path_roots if not _is_uri(r)]


def _uri_roots(cfg: PipelineConfig) -> list[str]:
    return [r.rstrip("/") for r in cfg.source.path_roots if _is_uri(r)]


def param_bounds(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """JSON-schema keywords the DAG's Params add to the config fields' own schema."""
    roots = [r.rstrip("/") for r in _local_roots(cfg)] + _uri_roots(cfg)
    # Under a root, with no ".." segment; "" (the form's "not set") always passes.
    pattern = (
        "^$|^(?:" + "|".join(_regex_literal(r) for r in roots) + ")/(?!(?:.*/)?\\.\\.(?:/|$)).+$"
        if roots
        else "^$"
    )
    return {
        "promotion_margin": {"minimum": MIN_PROMOTION_MARGIN},
        "min_score": {"minimum": cfg.registry.min_score},
        "source_path": {"pattern": pattern},
    }


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def source_path_problem(cfg: PipelineConfig, path: str, *, resolve: bool) -> str | None:
    """Why ``path`` may not be a run's source path, or None. ``resolve``: follow symlinks and
    expand a glob on this machine (the worker that reads it); otherwise lexical only (serving,
    which does not see the worker's files)."""
    roots_text = ", ".join(cfg.source.path_roots) or "none configured"
    where = f"outside source.path_roots ({roots_text}; NETSEC_SOURCE__PATH_ROOTS)"
    if _is_uri(path):
        if ".." in path.split("/"):
            return "a '..' segment"
        return None if any(path.startswith(r + "/") for r in _uri_roots(cfg)) else where
    local = path.removeprefix("file://")
    if not os.path.isabs(local):
        return "not an absolute path (a relative one depends on the worker's working directory)"
    if ".." in local.split("/"):
        return "a '..' segment"
    if not resolve:
        return None if _under(os.path.normpath(local), _local_roots(cfg)) else where
    roots = [os.path.realpath(r) for r in _local_roots(cfg)]
    targets = [os.path.realpath(p) for p in (glob.glob(local) or [local])]
    outside = [t for t in targets if not _under(t, roots)]
    if outside:
        return where + (f" ({outside[0]} after following links)" if outside[0] != local else "")
    return None


def check_run_params(cfg: PipelineConfig, params: Mapping[str, Any], *, resolve: bool = True) -> None:
    """Refuse run params that break :func:`param_bounds` (``cfg``: the deployment's config,
    before the params apply). None and "" are "not set" and always pass. Raises ConfigError
    naming every param, its value and its bound."""
    problems = []
    margin = params.get("promotion_margin")
    if margin not in (None, "") and float(margin) < MIN_PROMOTION_MARGIN:
        problems.append(
            f"promotion_margin {margin!r} is below {MIN_PROMOTION_MARGIN:g}: a run may only promote "
            "a model that beats Production"
        )
    floor = params.get("min_score")
    if floor not in (None, "") and float(floor) < cfg.registry.min_score:
        problems.append(
            f"min_score {floor!r} is below the configured registry.min_score "
            f"{cfg.registry.min_score:g}: a run may raise the floor, never lower it"
        )
    path = params.get("source_path")
    if path not in (None, ""):
        why = source_path_problem(cfg, str(path), resolve=resolve)
        if why:
            problems.append(f"source_path {str(path)!r}: {why}")
    if problems:
        raise ConfigError("run params refused: " + "; ".join(problems))


def run_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted config overrides of run ``params`` (None, "" and [] keep the config's value)."""
    return {
        dotted: params[name] for name, dotted in RUN_PARAMS.items() if params.get(name) not in (None, "", [])
    }
