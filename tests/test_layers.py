"""The library's floors: every module imports only from its own floor or below (imports inside functions count),
the module graph has no cycle, Streamlit stays in the app layer and no browser or server code is in the library.
"""
from __future__ import annotations

import ast

from tests.conftest import REPO

LIB = REPO / "leukoview"

# floor -> the library folder that holds it; docs/architecture.md draws the same floors. The top-level
# leukoview/__init__.py (the version) sits on floor 0 and leukoview/__main__.py (the parser) with the CLI.
FOLDERS = {0: "primitives", 1: "models", 2: "jobs", 3: "audits", 4: "app", 5: "cli"}
FLOOR_OF_FOLDER = {folder: floor for floor, folder in FOLDERS.items()}
# imports that run back up a floor, with the reason they stay (at most 2 allowed); none today
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def module_name(path) -> str:
    """``folder.module`` of a library file (``folder`` for a folder's __init__, the stem at the top)."""
    rel = path.relative_to(LIB).with_suffix("")
    parts = [x for x in rel.parts if x != "__init__"] or ["__init__"]
    return ".".join(parts)


def floor_of(module: str) -> int:
    top = module.split(".")[0]
    if top in FLOOR_OF_FOLDER:
        return FLOOR_OF_FOLDER[top]
    return {"__init__": 0, "__main__": 5}[top]


def library_files():
    return sorted(p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)


def _target(parts: list[str]) -> str:
    """The library module that ``leukoview.<parts>`` names (a package, a module, or a name inside either)."""
    for k in range(len(parts), 0, -1):
        cand = LIB.joinpath(*parts[:k])
        if cand.with_suffix(".py").is_file() or (cand / "__init__.py").is_file():
            return ".".join(parts[:k])
    return "__init__"


def _imports(path) -> list[tuple[str, str]]:
    """(imported library module, top-level package of every import) of one file, imports in functions too."""
    tree = ast.parse(path.read_text())
    package = module_name(path).split(".")[:-1] if path.name != "__init__.py" else module_name(path).split(".")
    package = [x for x in package if x != "__init__"]
    internal, external = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif (node.module or "").split(".")[0] == "leukoview":
                base = node.module.split(".")[1:]
            else:
                if node.module:
                    external.append(node.module.split(".")[0])
                continue
            for a in node.names:
                internal.append(_target([*base, a.name]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("leukoview."):
                    internal.append(_target(a.name.split(".")[1:]))
                else:
                    external.append(a.name.split(".")[0])
    return [(m, "internal") for m in internal] + [(m, "external") for m in external]


def _graph() -> dict[str, set[str]]:
    return {module_name(p): {m for m, kind in _imports(p) if kind == "internal"} - {module_name(p)}
            for p in library_files()}


def test_every_module_sits_in_a_floor_folder():
    loose = [module_name(p) for p in library_files() if p.parent == LIB and p.stem not in ("__init__", "__main__")]
    assert not loose, f"put {loose} in the folder of its floor ({sorted(FOLDERS.values())}) and in docs/architecture.md"
    assert {p.name for p in LIB.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(FOLDERS.values())


def test_the_import_parser_resolves_modules_names_and_packages():
    graph = _graph()
    assert {"models.bundle", "primitives.images", "audits"} <= graph["audits.palette"]
    assert "models.card" in graph["models.bundle"]
    assert {"audits", "audits.external", "models.splits"} <= graph["cli.audits"]


def test_imports_run_down_the_floors():
    upward = {(m, dep) for m, deps in _graph().items() for dep in deps if floor_of(dep) > floor_of(m)}
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
    for path in library_files():
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
    packages = set(FOLDERS.values()) - {"audits"}  # the folders' docstrings; audits/__init__ is the registry
    named = {m: m if m.startswith("cli.") else m.split(".")[-1] for m in _graph()}
    missing = sorted(m for m, name in named.items()
                     if m not in ("__init__", "__main__", *packages) and f"`{name}`" not in doc)
    assert not missing, f"docs/architecture.md does not place {missing}"


def test_the_readme_results_block_is_generated_from_the_shipped_bundles():
    from leukoview.app.compare import README_BEGIN, README_END, readme_summary
    from leukoview.models.bundle import list_bundles

    text = (REPO / "README.md").read_text()
    block = text[text.index(README_BEGIN):text.index(README_END) + len(README_END)]
    assert block == readme_summary(list_bundles(REPO / "models")), "run: python -m leukoview compare --readme"
    assert "| model |" in block and len(text.splitlines()) <= 250
