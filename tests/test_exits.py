"""The one exit-code table (custody.exits) against the programs, the systemd units and the docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from custody import errors
from custody.exits import ERROR_EXITS, ExitCode, exit_code_for

REPO = Path(__file__).resolve().parent.parent
CLI_MODULES = ("agent/cli.py", "ledger/cli.py", "ledger/authority_cli.py", "ledger/verify/cli.py")
UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
BEGIN = "<!-- exit-codes: the table in custody/exits.py; tests/test_exits.py keeps them equal -->"
END = "<!-- /exit-codes -->"

# Every class of the documented exception tree and the code it must give. Written out, so a new
# class, a dropped row of ERROR_EXITS or a row that shadows another fails here.
EXPECTED: dict[type[errors.CustodyError], ExitCode] = {
    errors.CustodyError: ExitCode.ERROR,
    errors.ConfigError: ExitCode.CONFIG,
    errors.KeyError_: ExitCode.KEY,
    errors.KeyPermissionError: ExitCode.KEY,
    errors.StorageError: ExitCode.STORAGE,
    errors.DiskFullError: ExitCode.STORAGE,
    errors.BudgetExceededError: ExitCode.STORAGE,
    errors.CorruptDatabaseError: ExitCode.STORAGE,
    errors.NotInitialisedError: ExitCode.STORAGE,
    errors.CaptureError: ExitCode.CAPTURE_REFUSED,
    errors.InvalidCaptureError: ExitCode.CAPTURE_REFUSED,
    errors.InvalidMassError: ExitCode.CAPTURE_REFUSED,
    errors.VerificationError: ExitCode.VERIFICATION_FAILED,
    errors.DecodeError: ExitCode.VERIFICATION_FAILED,
    errors.SchemaError: ExitCode.VERIFICATION_FAILED,
    errors.SignatureError: ExitCode.VERIFICATION_FAILED,
    errors.ChainError: ExitCode.VERIFICATION_FAILED,
    errors.CommitmentError: ExitCode.VERIFICATION_FAILED,
    errors.LogProofError: ExitCode.VERIFICATION_FAILED,
    errors.ProofError: ExitCode.VERIFICATION_FAILED,
    errors.CryptoSelfTestError: ExitCode.CRYPTO_SELF_TEST,
    errors.SyncError: ExitCode.ERROR,
}


def test_every_error_class_gets_its_branchs_code() -> None:
    tree = {
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.CustodyError)
    }
    assert tree == set(EXPECTED), "a class of custody.errors needs its exit code decided here"
    for cls, code in EXPECTED.items():
        assert exit_code_for(cls.__new__(cls)) is code, cls
    assert set(ERROR_EXITS) <= tree
    # The catch-all is the base's row alone: every branch that has its own meaning has a row.
    assert [c for c, code in ERROR_EXITS.items() if code is ExitCode.ERROR] == [errors.CustodyError]


def test_codes_outside_the_tree_are_the_tables() -> None:
    """Subclasses defined elsewhere inherit their branch's code."""
    from agent.outbox.writer import ChainMovedError
    from ledger.summary import SummaryError

    assert exit_code_for(ChainMovedError("x")) is ExitCode.CAPTURE_REFUSED
    assert exit_code_for(SummaryError("x")) is ExitCode.ERROR


def test_every_code_has_a_meaning() -> None:
    assert len({int(c) for c in ExitCode}) == len(ExitCode)
    for code in ExitCode:
        assert code.meaning and code.meaning[-1] not in ".;", code
        assert 0 <= code <= 255, code
    assert not ExitCode.OK.permanent


@pytest.mark.parametrize("module", CLI_MODULES)
def test_programs_return_no_exit_code_literals(module: str) -> None:
    """Failures come from the table: no ``return 3``, ``sys.exit(8)`` or ``SystemExit(2)``."""
    tree = ast.parse((REPO / module).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        values: list[ast.expr] = []
        if isinstance(node, ast.Return) and node.value is not None:
            values = [node.value]
            if isinstance(node.value, ast.IfExp):
                values = [node.value.body, node.value.orelse]
        elif isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Name) and node.func.id == "SystemExit")
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "exit")
        ):
            values = list(node.args)
        for value in values:
            if isinstance(value, ast.Constant) and isinstance(value.value, int) and value.value:
                found.append(f"{module}:{node.lineno}: {value.value}")
    assert found == [], found


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_does_not_restart_on_exactly_the_permanent_codes(unit: Path) -> None:
    text = unit.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("RestartPreventExitStatus=")]
    assert len(lines) == 1, unit
    listed = [int(v) for v in lines[0].partition("=")[2].split()]
    assert sorted(listed) == sorted(c for c in ExitCode if c.permanent)
    assert "Restart=on-failure" in text.splitlines()


def _render_table() -> str:
    rows = ["| code | meaning | systemd restarts the service |", "|---|---|---|"]
    for code in ExitCode:
        restart = (
            "-" if code is ExitCode.OK else "no: an operator must act" if code.permanent else "yes"
        )
        rows.append(f"| `{int(code)}` | {code.meaning} | {restart} |")
    return "\n".join(rows)


def test_readme_lists_every_exit_code() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1
    listed = readme.split(BEGIN)[1].split(END)[0].strip()
    expected = _render_table()
    assert listed == expected, f"README.md's exit-code table should read:\n{expected}"


def test_operations_guide_names_the_codes_systemd_leaves_failed() -> None:
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    found = re.search(r"except for exit codes a restart\s+cannot fix: ([^.]*)\.", text)
    assert found is not None
    named = [int(n) for n in re.findall(r"\b(\d+) [a-z]", found.group(1))]
    assert named == sorted(c for c in ExitCode if c.permanent)
