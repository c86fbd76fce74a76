"""What every ``netsec`` command shares: the configuration from the command line (``--config``,
``--set`` and the options behind config keys), output paths created with one clear error, JSON
output, the reader's notes, and the exit code of a figure that cannot be judged."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netsec_tasks.errors import ConfigError, NetsecError

# The command-line option behind a config key (for messages that blame the value's origin).
_OPTION_OF = {
    "source.kind": "--source",
    "source.path": "--source-path",
    "source.mongo.uri": "--uri",
    "source.mongo.collection": "--collection",
}

# The exit code of a comparison or evaluation that ran but cannot be judged (see the docstring).
NOT_JUDGED = 4


def config_from_args(args: argparse.Namespace, **overrides: Any):
    from netsec_tasks.config import load_config

    dotted = {k: v for k, v in overrides.items() if v is not None}
    origins = {k: f"{_OPTION_OF.get(k, k)} {v}" for k, v in dotted.items()}
    for item in [*(getattr(args, "set", None) or []), *(getattr(args, "set_after", None) or [])]:
        key, sep, value = item.partition("=")
        if not sep:
            raise NetsecError(f"--set takes KEY=VALUE, got {item!r}")
        import yaml

        try:
            dotted[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"--set {item}: the value is not valid YAML ({exc.__class__.__name__})"
            ) from None
        origins[key.strip()] = f"--set {item}"
    return load_config(
        getattr(args, "config_after", None) or args.config, overrides=dotted, override_origins=origins
    )


def output_file(path: str | Path) -> Path:
    """An output file's path with its folder created; one clear error when it cannot be."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetsecError(
            f"cannot create the folder of the output file {path}: {exc.strerror or exc}"
        ) from None
    if path.is_dir():
        raise NetsecError(f"the output file {path} is a folder; give a file name")
    return path


def output_dir(path: str | Path) -> Path:
    """An output folder, created; one clear error when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetsecError(f"cannot create the output folder {path}: {exc.strerror or exc}") from None
    return path


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def reader_notes(notes: Sequence[str]) -> None:
    """What the CSV reader did that the user should know (a dropped trailing delimiter...)."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
