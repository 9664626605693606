"""The library's floors: every module imports only from its own floor or below (imports inside functions count),
the module graph has no cycle, Streamlit stays in the app layer and no browser or server code is in the library.
"""
from __future__ import annotations

import ast

from tests.conftest import REPO

LIB = REPO / "leukoview"

# floor -> modules; docs/architecture.md draws the same floors
FLOORS = {
    0: {"__init__", "settings", "images", "metrics", "calibration", "ood", "segment", "augment", "tasks", "vocab"},
    1: {"datasets", "archs", "card", "bundle", "transforms", "classical", "onnx_backend", "seen", "differential",
        "users"},
    2: {"adapt", "audits", "trainconfig", "rundata", "adversary", "fieldhead", "bundle_writer", "train",
        "classical_train", "predict", "explain", "evaluate"},
    3: {"shift", "oodeval", "camstats", "shortcuts", "latency", "external", "oodscores", "wrongtask", "tracking",
        "palette"},
    4: {"ui", "ui_batch", "ui_keys", "ui_adapt", "ui_single", "ui_compare", "api", "landing", "compare", "batch",
        "review", "gallery", "report", "charts", "advice", "threshold", "samples", "scored", "scale"},
    5: {"__main__", "cli_models", "cli_audits", "cli_lab"},
}
FLOOR_OF = {m: f for f, mods in FLOORS.items() for m in mods}
# imports that run back up a floor, with the reason they stay (at most 2 allowed); none today
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def _imports(path) -> list[tuple[str, str]]:
    """(imported leukoview module, top-level package of every import) of one file, imports in functions too."""
    tree = ast.parse(path.read_text())
    internal, external = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.module or "").startswith("leukoview"):
                base = (node.module or "").removeprefix("leukoview").lstrip(".")
                if base:
                    internal.append(base.split(".")[0])
                else:  # from . import a, b
                    internal += [a.name for a in node.names]
            elif node.module:
                external.append(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("leukoview."):
                    internal.append(a.name.split(".")[1])
                else:
                    external.append(a.name.split(".")[0])
    return [(m, "internal") for m in internal] + [(m, "external") for m in external]


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(LIB.glob("*.py")):
        graph[path.stem] = {m for m, kind in _imports(path) if kind == "internal" and m != "__version__"}
    return graph


def test_every_module_has_a_floor():
    assert set(_graph()) == set(FLOOR_OF), "add the new module to FLOORS (and docs/architecture.md)"


def test_imports_run_down_the_floors():
    upward = {(m, dep) for m, deps in _graph().items() for dep in deps if FLOOR_OF[dep] > FLOOR_OF[m]}
    assert upward <= ALLOWED_UPWARD, sorted(upward - ALLOWED_UPWARD)
    assert len(ALLOWED_UPWARD) <= 2


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}

    def visit(m, trail):
        state[m] = 1
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == 1:
                return [*trail[trail.index(dep):], dep]
            if dep not in state and (found := visit(dep, [*trail, dep])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_no_import_cycle():
    assert find_cycle(_graph()) is None


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_streamlit_only_in_the_ui_modules_and_no_browser_or_server_in_the_library():
    for path in sorted(LIB.glob("*.py")):
        external = {m for m, kind in _imports(path) if kind == "external"}
        if not path.stem.startswith("ui"):
            assert "streamlit" not in external, path.name
        if path.stem != "api":  # the scoring API is the one web front-end besides the pages
            assert not external & {"fastapi", "uvicorn", "starlette"}, path.name
        if path.stem != "scale":  # Ray: the scale-out engine's alone
            assert "ray" not in external, path.name
        assert not external & {"playwright", "subprocess", "socket", "urllib"}, path.name


def test_the_benchmark_lives_in_bench():
    assert not (LIB / "benchmark.py").exists()
    assert (REPO / "bench" / "__main__.py").is_file()


def test_the_architecture_doc_names_every_module():
    doc = (REPO / "docs" / "architecture.md").read_text()
    missing = sorted(m for m in FLOOR_OF if m not in ("__init__", "__main__") and f"`{m}`" not in doc)
    assert not missing, f"docs/architecture.md does not place {missing}"


def test_the_readme_results_block_is_generated_from_the_shipped_bundles():
    from leukoview.bundle import list_bundles
    from leukoview.compare import README_BEGIN, README_END, readme_summary

    text = (REPO / "README.md").read_text()
    block = text[text.index(README_BEGIN):text.index(README_END) + len(README_END)]
    assert block == readme_summary(list_bundles(REPO / "models")), "run: python -m leukoview compare --readme"
    assert "| model |" in block and len(text.splitlines()) <= 250
