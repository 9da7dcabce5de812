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
    "sqlite3": {"agent/outbox", "agent/workflows/visitbook.py", "ledger", "tests", "bench"},
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
