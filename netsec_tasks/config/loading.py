"""Loading the configuration: finding the file, ``NETSEC_*`` environment overrides, command-line
overrides, each remembered by origin for messages, then :func:`load_config`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from netsec_tasks.config.pipeline_config import (
    PACKAGE_CONFIG_DIR,
    PipelineConfig,
    set_dotted,
    validate_config,
)
from netsec_tasks.errors import ConfigError

ENV_PREFIX = "NETSEC_"
# Environment variables with the prefix that are not config keys.
_RESERVED_ENV = {"NETSEC_CONFIG", "NETSEC_HOME"}
# The serving service's settings (serving/settings.py): not pipeline keys, so a CLI command run
# inside the serving container (e.g. `netsec predict`) does not reject them as unknown keys.
_RESERVED_PREFIXES = ("NETSEC_SERVING_",)


def find_config_file(path: str | os.PathLike | None = None) -> Path:
    candidates = [Path(path)] if path else []
    if not path and os.environ.get("NETSEC_CONFIG"):
        candidates.append(Path(os.environ["NETSEC_CONFIG"]))
    if not candidates:
        candidates += [Path.cwd() / "config" / "pipeline.yaml", PACKAGE_CONFIG_DIR / "pipeline.yaml"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ConfigError(
        "no pipeline config found (looked at "
        + ", ".join(str(c) for c in candidates)
        + "); pass --config or set NETSEC_CONFIG"
    )


def _env_overrides(environ: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """Nested dict of overrides from NETSEC_* variables, and a map dotted key -> variable name."""
    tree: dict = {}
    origin: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _RESERVED_ENV or name.startswith(_RESERVED_PREFIXES):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        set_dotted(tree, keys, value, origin=name)
        origin[".".join(keys)] = f"${name}"
    return tree, origin


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    path: str | os.PathLike | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    override_origins: dict[str, str] | None = None,
) -> PipelineConfig:
    """Load, merge and validate the configuration. Raises ConfigError naming any bad key and
    where its value came from. ``override_origins``: dotted key -> how the user set it, for
    messages (``--set training.n_iter=0``)."""
    environ = dict(os.environ if environ is None else environ)
    file = find_config_file(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: top level must be a mapping of sections")
    raw["config_dir"] = str(file.parent)
    env_tree, origin = _env_overrides(environ)
    data = _deep_merge(raw, env_tree)
    if environ.get("NETSEC_HOME"):
        data["workdir"] = environ["NETSEC_HOME"]
        origin["workdir"] = "$NETSEC_HOME"
    if environ.get("MLFLOW_TRACKING_URI") and "registry.tracking_uri" not in origin:
        data.setdefault("registry", {})["tracking_uri"] = environ["MLFLOW_TRACKING_URI"]
        origin["registry.tracking_uri"] = "$MLFLOW_TRACKING_URI"
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted.split("."), value, origin=dotted)
        origin[dotted] = (override_origins or {}).get(dotted) or f"override {dotted}={value!r}"
    return validate_config(data, origin, source=str(file))
