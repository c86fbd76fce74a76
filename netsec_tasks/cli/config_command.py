"""``netsec config``: the effective configuration as YAML, with ``--describe`` each key's doc."""

from __future__ import annotations

import argparse
import json
from typing import Any

from netsec_tasks.cli.common import config_from_args


def cmd_config(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    import yaml

    data = json.loads(cfg.model_dump_json())
    if args.describe:
        print("\n".join(_described(type(cfg), data)))
    else:
        print(yaml.safe_dump(data, sort_keys=False))
    return 0


def _described(model: Any, data: dict, indent: str = "") -> list[str]:
    """``data`` (the values of config model ``model``) as YAML lines, each key preceded by its
    description as comment lines: the field's ``description``, or a section's docstring. The
    same YAML as ``netsec config`` prints, only annotated."""
    import inspect
    import textwrap

    import yaml
    from pydantic import BaseModel

    lines: list[str] = []
    for name, value in data.items():
        field = model.model_fields[name]
        sub = field.annotation
        section = isinstance(sub, type) and issubclass(sub, BaseModel)
        doc = field.description or (inspect.cleandoc(sub.__doc__ or "") if section else "")
        if section and lines:
            lines.append("")
        lines += [f"{indent}# {t}" for t in textwrap.wrap(" ".join(doc.split()), 98 - len(indent))]
        if section:
            lines.append(f"{indent}{name}:")
            lines += _described(sub, value, indent + "  ")
        elif isinstance(value, list):  # flow style, as in config/pipeline.yaml
            lines.append(
                f"{indent}{name}: " + yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
            )
        else:
            lines.append(
                indent + yaml.safe_dump({name: value}, default_flow_style=False, width=1 << 20).rstrip()
            )
    return lines
