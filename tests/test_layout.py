"""The dependency direction of ARCHITECTURE.md "Layout", checked on the imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# lab (private servers, the demo) and bench may import anything; no deployed package imports them.
OURS = {"custody", "firmware_bridge", "agent", "sync", "ledger", "bench", "lab", "tests"}
# package -> packages of ours it may import
ALLOWED = {
    "custody": set(),
    "firmware_bridge": set(),
    "sync": {"custody"},
    "agent": {"custody", "firmware_bridge", "sync"},
    "ledger": {"custody", "sync"},
}
ALLOWED_VERIFY = {"custody", "ledger.verify"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependency_direction(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, package
    for f in files:
        for name in imports_of(f):
            top = name.split(".")[0]
            if top in OURS and top != package:
                assert top in ALLOWED[package], f"{f.relative_to(REPO)} imports {name}"


def test_verifier_needs_only_custody_and_itself() -> None:
    for f in sorted((REPO / "ledger" / "verify").rglob("*.py")):
        for name in imports_of(f):
            if name.split(".")[0] in OURS:
                assert any(name == a or name.startswith(a + ".") for a in ALLOWED_VERIFY), (
                    f"{f.relative_to(REPO)} imports {name}"
                )


# ARCHITECTURE.md "Layout": each third-party I/O library has exactly one home.
SINGLE_HOMES = {
    "serial": {"firmware_bridge/transport.py"},
    "cv2": {"firmware_bridge/camera"},
    "pyzbar": {"firmware_bridge/camera"},
    "zxingcpp": {"firmware_bridge/camera"},
    # bench/peers is the peer comparison's observer: it answers the peer gateway's requests and
    # counts what reaches the broker, as a raw MQTT client (it measures, it is not our gateway).
    "paho": {"sync", "bench/peers"},
    # agent/workflows/visitbook.py: the weighbridge's visit book, a projection of the outbox in
    # its own small database; it reads the outbox only through Outbox methods.
    # The ledger's store reaches each database through its dialect only (ledger/store.py).
    "sqlite3": {
        "agent/outbox",
        "agent/workflows/visitbook.py",
        "ledger/dialect_sqlite.py",
        "bench",
    },
    "psycopg": {"ledger/dialect_pg.py"},
    # The optional camera extra's array library, like OpenCV.
    "numpy": {"firmware_bridge/camera"},
}


@pytest.mark.parametrize("library", sorted(SINGLE_HOMES))
def test_io_libraries_are_imported_in_one_place(library: str) -> None:
    homes = SINGLE_HOMES[library]
    for package in (*ALLOWED, "bench"):
        for f in sorted((REPO / package).rglob("*.py")):
            rel = f.relative_to(REPO).as_posix()
            if any(name.split(".")[0] == library for name in imports_of(f)):
                assert any(rel == h or rel.startswith(h + "/") for h in homes), (
                    f"{rel} imports {library}; only {sorted(homes)} may"
                )


# pyproject's optional extras (docs/operations.md "Roles"): a deployed package reaches the modules
# that need them only from inside a function, so importing the gateway or the ledger never needs
# the extra; the call that wants the camera or PostgreSQL gets the plain "install the extra" error.
OPTIONAL = {
    "firmware_bridge.camera": "firmware_bridge/camera",  # [camera]: OpenCV, numpy, zbar, zxing
    "ledger.dialect_pg": "ledger/dialect_pg.py",  # [postgres]: psycopg
}


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported: not inside a function (but inside ``try``,
    ``if`` or a class body, which run at import)."""
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.update({node.module} | {f"{node.module}.{a.name}" for a in node.names})
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(list(getattr(node, field, [])))

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return names


def test_optional_extras_are_imported_only_when_asked_for() -> None:
    found = []
    for package in ALLOWED:
        for f in sorted((REPO / package).rglob("*.py")):
            rel = f.relative_to(REPO).as_posix()
            for module, home in OPTIONAL.items():
                if rel == home or rel.startswith(home + "/"):
                    continue
                if any(n == module or n.startswith(module + ".") for n in top_level_imports(f)):
                    found.append(f"{rel} imports {module} at import time")
    assert found == [], found


def test_the_import_time_check_sees_through_try_and_skips_functions(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "try:\n    from firmware_bridge import camera\nexcept ImportError:\n    pass\n"
        "def later():\n    import ledger.dialect_pg\n"
    )
    assert top_level_imports(f) == {"firmware_bridge", "firmware_bridge.camera"}


def test_custody_does_not_import_argparse() -> None:
    """custody is the pure record library; command-line options belong to the CLIs."""
    for f in sorted((REPO / "custody").rglob("*.py")):
        assert "argparse" not in {n.split(".")[0] for n in imports_of(f)}, (
            f"{f.relative_to(REPO)} imports argparse"
        )


def test_only_the_outbox_package_touches_its_database_connection() -> None:
    """The outbox is closed: its SQL, and the record states in it, live in agent/outbox; other
    code calls Outbox methods (no ``.conn`` outside the package)."""
    found = []
    for f in sorted((REPO / "agent").rglob("*.py")):
        if f.parent.name == "outbox":
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "conn":
                found.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert found == [], found


def module_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, at any level of the file (an import
    inside a function is still a dependency; deferring it only hides a cycle)."""
    modules: dict[str, Path] = {}
    for f in sorted((REPO / package).rglob("*.py")):
        parts = f.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {}
    for name, f in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_agent_has_no_import_cycle() -> None:
    """The supervisor and the workflow plug-ins both depend on agent.service.context and
    never on each other; no other agent modules import each other in a ring either."""
    graph = module_graph("agent")
    assert "agent.service.context" in graph["agent.service.plugins"]
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
