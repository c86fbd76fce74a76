"""Import hygiene of the tree: private-name imports and import circles.

    .venv/bin/python scripts/import_graph.py            # both reports, exit 0
    .venv/bin/python scripts/import_graph.py --check    # exit 1 when either is not empty

Reads every ``*.py`` under ``netsec_tasks``, ``serving``, ``dags`` and ``plugins`` with :mod:`ast`
(nothing is imported or run) and lists:

- **private-name imports**: ``from m import _x`` and ``import m._x`` (any module, ours or a
  library's): a name another module keeps private, which may change under us without notice;
- **library -> service imports**: a ``netsec_tasks`` module importing ``serving`` (the library must
  not know the service; ``netsec serve`` reaches it through an entry point);
- **import circles**: the strongly connected groups of our own modules in the graph of "module A
  imports module B", counting imports inside functions too (a function-local import hides a
  circle from Python's import machinery but not from the reader). ``from pkg import name`` is an
  edge to ``pkg.name`` when that is a module, else to ``pkg``.

A line of each report per item; the count first. Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOTS = ("netsec_tasks", "serving", "dags", "plugins")


def module_name(path: Path, repo: Path) -> str:
    parts = list(path.relative_to(repo).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(repo: Path) -> dict[str, Path]:
    """Our module names -> files."""
    out = {}
    for root in ROOTS:
        for path in sorted((repo / root).rglob("*.py")):
            out[module_name(path, repo)] = path
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def scan(repo: Path) -> tuple[list[str], dict[str, set[str]]]:
    """(private-name imports as 'file:line: statement', module graph {module: imported modules})."""
    mods = modules(repo)
    private: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        where = path.relative_to(repo)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if any(_private(p) for p in alias.name.split(".")):
                        private.append(f"{where}:{node.lineno}: import {alias.name}")
                    target = _ours(alias.name, mods)
                    if target and target != mod:
                        graph[mod].add(target)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    if _private(alias.name) or any(_private(p) for p in base.split(".")):
                        private.append(f"{where}:{node.lineno}: from {base} import {alias.name}")
                    sub = f"{base}.{alias.name}"
                    target = sub if sub in mods else _ours(base, mods)
                    if target and target != mod:
                        graph[mod].add(target)
    return private, graph


def _ours(name: str, mods: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (None: a library's)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in mods:
            return candidate
    return None


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--check", action="store_true", help="exit 1 when anything is listed")
    args = parser.parse_args(argv)
    private, graph = scan(args.repo)
    groups = circles(graph)
    print(f"private-name imports: {len(private)}")
    for line in private:
        print(f"  {line}")
    upward = sorted(
        f"{mod} -> {dep}"
        for mod, deps in graph.items()
        if mod.split(".")[0] == "netsec_tasks"
        for dep in deps
        if dep.split(".")[0] == "serving"
    )
    print(f"library -> service imports: {len(upward)}")
    for line in upward:
        print(f"  {line}")
    print(f"import circles: {len(groups)}")
    for group in groups:
        print("  " + " <-> ".join(group))
    return 1 if args.check and (private or upward or groups) else 0


if __name__ == "__main__":
    sys.exit(main())
