"""The tree's import hygiene (scripts/import_graph.py, read with ast, nothing imported): no module
reaches another's private names, the library never imports the service, and no import circle.
A ratchet: the list below only shrinks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Third-party private names with no public equivalent: scikit-learn's OpenML URL and errors
# (fetch_openml takes no base URL and exports neither error; see datasets.py), and pandas'
# default NA strings (read_csv's list, exported nowhere else).
ALLOWED_PRIVATE = {
    "netsec_tasks/datasets.py: from sklearn.datasets import _openml",
    "netsec_tasks/datasets.py: from sklearn.datasets._openml import OpenMLError",
    "netsec_tasks/datasets.py: from sklearn.externals._arff import ArffException",
    "netsec_tasks/table_io/csv_reader.py: from pandas._libs.parsers import STR_NA_VALUES",
}


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_private_names_no_service_import_no_new_circle():
    tool = _tool()
    private, graph = tool.scan(REPO)
    # "file:line: statement" -> "file: statement" (line numbers move with every edit)
    found = {f"{p.split(':', 2)[0]}: {p.split(': ', 1)[1]}" for p in private}
    assert found <= ALLOWED_PRIVATE, sorted(found - ALLOWED_PRIVATE)
    upward = {(m, d) for m, deps in graph.items() for d in deps}
    assert not [(m, d) for m, d in upward if m.startswith("netsec_tasks") and d.startswith("serving")], (
        "the library imports the service"
    )
    # No circle at all (the last three were untangled in issue 22's second part): a module that
    # needs a piece of another that needs it back means the piece belongs in a third, below both.
    assert tool.circles(graph) == []


def test_the_tool_finds_circles_hidden_in_functions_and_private_imports(tmp_path):
    """The checker itself: a circle made of function-local imports, and a private name."""
    pkg = tmp_path / "netsec_tasks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from netsec_tasks.b import g\n")
    (pkg / "b.py").write_text("from netsec_tasks import a\nfrom netsec_tasks.c import _hidden\n")
    (pkg / "c.py").write_text("_hidden = 1\n")
    tool = _tool()
    private, graph = tool.scan(tmp_path)
    assert private == ["netsec_tasks/b.py:2: from netsec_tasks.c import _hidden"]
    assert tool.circles(graph) == [["netsec_tasks.a", "netsec_tasks.b"]]
