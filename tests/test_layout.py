"""The dependency direction of ARCHITECTURE.md "Layout", checked on the imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = {"custody", "firmware_bridge", "agent", "sync", "ledger", "bench", "tests"}
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
