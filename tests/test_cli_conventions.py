"""What all four programs do alike, run as the installed commands: --version, options before or
after the command, a quiet exit when the reader goes away, shell completion, progress bars."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import agent.cli
import custody
from agent import cli_table
from agent.identity import load_device_key
from ledger import authority_cli
from ledger import cli as ledger_cli
from ledger.store import LedgerStore
from ledger.verify import cli as verify_cli
from ledger.verify import cli_table as ledger_cli_table
from tests.brokers import MosquittoBroker, TestPKI
from tests.conftest import Gateway
from tests.support import wait_until
from tests.test_sync_e2e import PAHO_TLS_RECONNECT_LEAK, Ledger
from tests.test_sync_e2e import ledger as ledger  # the fixture, by its name

BIN = Path(sys.executable).parent
PROGRAMS = ("custody-agent", "custody-ledger", "custody-registry", "custody-verify")


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / str(argv[0])), *map(str, argv[1:])], capture_output=True, text=True, timeout=120
    )


# --- --version and --help ---------------------------------------------------------------------
@pytest.mark.parametrize("prog", PROGRAMS)
def test_every_program_prints_the_installed_version(prog: str) -> None:
    done = run(prog, "--version")
    assert done.returncode == 0, done.stderr
    installed = importlib.metadata.version("cobalt-custody")
    assert installed == custody.__version__  # pyproject.toml and the package agree
    assert done.stdout == f"{prog} {installed}\n"


@pytest.mark.parametrize("prog", PROGRAMS)
def test_every_programs_help_points_to_the_exit_code_table(prog: str) -> None:
    done = run(prog, "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert 'the table in README.md ("Exit codes, the same for all four programs")' in text
    assert "141 when the reader of the output went away" in text
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "Exit codes, the same for all four programs" in readme


# --- options before or after the command --------------------------------------------------------
@pytest.mark.parametrize(
    ("parser", "before", "after", "want"),
    [
        (ledger_cli.build_parser, ["--data-dir", "L", "--db", "postgresql://h/d", "devices"],
         ["devices", "--data-dir", "L", "--db", "postgresql://h/d"],
         {"data_dir": Path("L"), "db": "postgresql://h/d"}),
        (ledger_cli.build_parser, ["--db", "x", "pki", "--pki-dir", "P", "list"],
         ["pki", "list", "--pki-dir", "P", "--db", "x"], {"db": "x", "pki_dir": "P"}),
        (agent.cli.build_parser, ["--data-dir", "D", "status"], ["status", "--data-dir", "D"],
         {"data_dir": Path("D")}),
        (authority_cli.build_parser, ["--dir", "A", "--json", "list"],
         ["list", "--dir", "A", "--json"], {"dir": Path("A"), "json": True}),
        (verify_cli.build_trust_parser, ["--trust", "T", "list"],
         ["list", "--trust", "T"], {"trust": Path("T")}),
    ],
)  # fmt: skip
def test_global_options_go_before_or_after_the_command(
    parser: object, before: list[str], after: list[str], want: dict[str, object]
) -> None:
    build = parser  # each program's build_parser
    assert callable(build)
    for argv in (before, after):
        args = build().parse_args(argv)
        assert {k: getattr(args, k) for k in want} == want, argv
    # Given only before the command, the command's own copy does not reset it to a default.
    args = build().parse_args(before)
    assert all(getattr(args, k) == v for k, v in want.items())


def test_the_ledger_takes_data_dir_after_the_command(tmp_path: Path) -> None:
    data = tmp_path / "ledger"
    assert run("custody-ledger", "--data-dir", data, "init").returncode == 0
    before = run("custody-ledger", "--data-dir", data, "devices", "--json")
    after = run("custody-ledger", "devices", "--json", "--data-dir", data)
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    assert before.stdout == after.stdout == "[]\n"
    # The option really is read there: another directory has no ledger keys.
    elsewhere = run("custody-ledger", "--data-dir", data, "log", "checkpoint",
                    "--data-dir", tmp_path / "none")  # fmt: skip
    assert elsewhere.returncode != 0 and str(tmp_path / "none") in elsewhere.stderr


# --- a reader that goes away ---------------------------------------------------------------------
def _into_a_closed_pipe(argv: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader is already gone: every write fails with EPIPE."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(
            [str(BIN / str(argv[0])), *map(str, argv[1:])],
            stdout=w, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(w)


def test_output_into_a_closed_pipe_ends_quietly_with_141(tmp_path: Path) -> None:
    data = tmp_path / "ledger"
    assert run("custody-ledger", "--data-dir", data, "init").returncode == 0
    authority = tmp_path / "authority"
    assert run("custody-registry", "init", "--name", "reg", "--dir", authority).returncode == 0
    for argv in (
        ("custody-agent", "--data-dir", tmp_path / "gw", "config", "settings"),
        ("custody-ledger", "devices", "--json", "--data-dir", data),
        ("custody-registry", "list", "--json", "--dir", authority),
        ("custody-verify", "trust", "list", "--json", "--trust", tmp_path / "trust.json"),
        ("custody-agent", "completion", "bash"),
    ):
        done = _into_a_closed_pipe(argv)
        assert (done.returncode, done.stderr) == (cli_table.EXIT_BROKEN_PIPE, ""), argv
    assert cli_table.EXIT_BROKEN_PIPE == 141  # 128 + SIGPIPE on Linux


def test_devices_listen_into_head_stops_quietly(tmp_path: Path) -> None:
    """The issue's own case: a live port's frames piped into `head`."""
    link = tmp_path / "tty"
    sim = subprocess.Popen(
        [str(BIN / "custody-agent"), "sim", "scale", "--dialect", "xk3190-a12", "--pty",
         "--link", str(link), "--duration", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def started() -> bool:
            assert sim.poll() is None, "the simulator exited before its pty appeared"
            return link.exists()

        wait_until(started, "the simulator's pty link", timeout=30)
        listen = shlex.join([str(BIN / "custody-agent"), "devices", "listen", "--port", str(link),
                             "--dialect", "xk3190-a12"])  # fmt: skip
        done = subprocess.run(
            ["bash", "-c", f"{listen} 2>{tmp_path / 'err'} | head -3 >/dev/null; "
             'echo "${PIPESTATUS[0]}"'],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        sim.terminate()
        sim.wait(10)
    assert done.stdout.strip() == "141", done
    assert "Traceback" not in (tmp_path / "err").read_text()


def test_a_broken_pipe_that_is_not_our_output_is_not_hidden() -> None:
    def socket_write() -> int:
        raise BrokenPipeError(32, "Broken pipe")  # as a socket whose peer went away

    with pytest.raises(BrokenPipeError):
        cli_table.quiet_broken_pipe(socket_write)


# --- shell completion ----------------------------------------------------------------------------
def _complete(prog: str, words: Sequence[str], dialect: str = "bash") -> tuple[str, list[str]]:
    """Source `prog completion DIALECT` in a real bash, then complete the last of ``words``."""
    script = run(prog, "completion", dialect)
    assert script.returncode == 0, script.stderr
    func = "_" + prog.replace("-", "_") + "_complete"
    line = [prog, *words]
    program = (
        f"source /dev/stdin\ncomplete -p {prog}\n"
        f"COMP_WORDS=({shlex.join(line)}); COMP_CWORD={len(line) - 1}\n"
        f'{func}\nprintf "%s\\n" "${{COMPREPLY[@]}}"\n'
    )
    lines = script.stdout + "\n" + program
    if dialect == "zsh":  # bash cannot run the zsh preamble; the rest is the bash script
        lines = script.stdout.split("\n", 2)[2] + "\n" + program
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", "source /dev/stdin"],
                          input=lines, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, *rest = done.stdout.splitlines()
    return first, [w for w in rest if w]


@pytest.mark.parametrize(
    ("prog", "words", "want"),
    [
        ("custody-agent", ["ke"], ["keys"]),
        ("custody-agent", ["--data-dir", "/tmp", "events", "ex"], ["export"]),
        ("custody-agent", ["events", "export", "--format", ""], ["cose", "epcis"]),
        ("custody-agent", ["completion", ""], ["bash", "zsh", "--data-dir", "--help"]),
        ("custody-ledger", ["--db", "x", "rev"], ["revoke"]),
        ("custody-ledger", ["pki", "--pki-dir", "P", "issue-"], ["issue-broker", "issue-ledger"]),
        ("custody-ledger", ["summary", "--audience", "a"], ["auditor"]),
        ("custody-registry", ["he"], ["heartbeat"]),
        ("custody-verify", ["trust", "re"], ["remove"]),
    ],
)
def test_bash_completes_commands_from_the_table(
    prog: str, words: list[str], want: list[str]
) -> None:
    registered, offered = _complete(prog, words)
    assert registered == f"complete -F _{prog.replace('-', '_')}_complete {prog}"
    assert sorted(offered) == sorted(want)


def test_completion_offers_file_names_where_a_file_goes(tmp_path: Path) -> None:
    (tmp_path / "lot-1.cbor").write_bytes(b"")
    _, offered = _complete("custody-verify", [str(tmp_path / "lot")])
    assert offered == [str(tmp_path / "lot-1.cbor")]
    _, offered = _complete("custody-ledger", ["export", "--out", str(tmp_path / "lo")])
    assert offered == [str(tmp_path / "lot-1.cbor")]


def test_the_zsh_script_loads_bashcompinit_and_completes_alike() -> None:
    script = run("custody-agent", "completion", "zsh").stdout
    assert script.startswith(
        "#compdef custody-agent\nautoload -U +X bashcompinit && bashcompinit\n"
    )
    assert _complete("custody-agent", ["sy"], dialect="zsh")[1] == ["sync"]


def test_every_command_of_every_program_is_completed() -> None:
    """The script is made from the table: each command is offered where it belongs."""
    scripts: dict[str, tuple[Any, str]] = {
        "custody-agent": (
            agent.cli.COMMANDS,
            cli_table.completion_script(agent.cli.COMMANDS, "bash"),
        ),
        **{
            table.name: (table, ledger_cli_table.completion_script(table, "bash"))
            for table in (ledger_cli.COMMANDS, authority_cli.COMMANDS, verify_cli.commands())
        },
    }
    for prog, (table, script) in scripts.items():
        for group in (table, *table.commands):
            words = next(
                line
                for line in script.splitlines()
                if line.strip().startswith(
                    f'"{"/" + group.name if group is not table else ""}") words='
                )
            )
            for child in group.commands:
                assert f" {child.name} " in words or f'"{child.name} ' in words, (prog, child)


# --- progress bars ------------------------------------------------------------------------------
def _stderr_on_a_pty(argv: Sequence[str | Path]) -> tuple[int, str]:
    """Run with stderr a real pseudo-terminal (stdout a pipe); return its exit and stderr."""
    master, slave = os.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the program closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [str(BIN / str(argv[0])), *map(str, argv[1:])],
            stdout=subprocess.PIPE, stderr=slave, timeout=300,
        )  # fmt: skip
    finally:
        os.close(slave)
    reader.join(30)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def recorded(gateway: Gateway) -> Gateway:
    with gateway.recorder() as rec:
        for i in range(12):
            rec.seal_scan(f"SEAL-{i:03d}")
    return gateway


def test_an_export_draws_a_bar_on_a_terminal_and_nothing_into_a_pipe(
    recorded: Gateway, tmp_path: Path
) -> None:
    argv = ("custody-agent", "--data-dir", recorded.data_dir, "events", "export", "--out")
    code, err = _stderr_on_a_pty((*argv, tmp_path / "cose"))
    assert code == 0, err
    assert "exporting [------------------------------] 0/13" in err  # 12 scans and the boot
    assert "exporting [##############################] 13/13" in err
    piped = run(*argv, tmp_path / "cose2")
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    assert len(list((tmp_path / "cose2").glob("*.cose"))) == 13


def test_the_ledgers_export_draws_a_bar_on_a_terminal_only(tmp_path: Path) -> None:
    data = tmp_path / "ledger"
    assert run("custody-ledger", "--data-dir", data, "init").returncode == 0
    argv = ("custody-ledger", "export", "--data-dir", data, "--out", tmp_path / "e.json")
    code, err = _stderr_on_a_pty(argv)
    assert code == 0 and "exporting [" in err and "reading 0" in err, err
    piped = run(*argv)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr


@PAHO_TLS_RECONNECT_LEAK
def test_sync_once_shows_progress_while_it_runs_on_a_terminal(
    recorded: Gateway, ledger: Ledger, broker: MosquittoBroker, test_pki: TestPKI
) -> None:
    argv = ("custody-agent", "sync", "--once", "--timeout", "120", "--data-dir",
            recorded.data_dir)  # fmt: skip
    code, err = _stderr_on_a_pty(argv)
    assert code == 0, err
    # The bar is drawn before the first ack (not only at the end) and then completes.
    assert err.index("acked [------------------------------] 0/13") < err.index(
        "acked [##############################] 13/13"
    )
    with recorded.recorder() as rec:
        rec.seal_scan("SEAL-LATE")
    piped = run(*argv)
    assert piped.returncode == 0, piped.stderr
    assert "acked [" not in piped.stderr


# --- --json where a script reads the output ---------------------------------------------------
def test_config_settings_and_exports_print_json_for_scripts(
    recorded: Gateway, tmp_path: Path
) -> None:
    settings = run("custody-agent", "config", "settings", "--json", "--data-dir", recorded.data_dir)
    assert settings.returncode == 0, settings.stderr
    listed = json.loads(settings.stdout)
    assert {"sync.broker", "weighbridge.window_s"} <= {s["key"] for s in listed}
    assert all(s["help"] and set(s) == {"key", "default", "required", "help"} for s in listed)
    cose = run("custody-agent", "events", "export", "--out", tmp_path / "cose", "--json",
               "--data-dir", recorded.data_dir)  # fmt: skip
    assert json.loads(cose.stdout) == {"format": "cose", "out": str(tmp_path / "cose"),
                                       "exported": 13}  # fmt: skip
    epcis = run("custody-agent", "events", "export", "--format", "epcis", "--out",
                tmp_path / "e.json", "--json", "--data-dir", recorded.data_dir)  # fmt: skip
    got = json.loads(epcis.stdout)
    assert (got["format"], got["exported"], got["error_declarations"]) == ("epcis", 12, 0)
    document = json.loads((tmp_path / "e.json").read_text())
    assert len(document["epcisBody"]["eventList"]) == got["exported"]


def test_the_ledgers_revoke_and_export_print_json_for_scripts(
    gateway: Gateway, tmp_path: Path
) -> None:
    data = tmp_path / "central"
    assert run("custody-ledger", "--data-dir", data, "init").returncode == 0
    key = load_device_key(gateway.data_dir / "device.key")
    store = LedgerStore(data / "ledger.sqlite")
    try:
        store.enroll(gateway.device_id, gateway.site_id, key.public_key, key.kid)
    finally:
        store.close()
    revoked = run("custody-ledger", "revoke", gateway.device_id, "--json", "--data-dir", data)
    assert revoked.returncode == 0, revoked.stderr
    got = json.loads(revoked.stdout)
    assert (got["device"], got["keys_revoked"], got["certificates_revoked"]) == (
        gateway.device_id,
        1,
        0,
    )
    assert [r["kid"] for r in got["retire"]] in ([], [key.kid.hex()])
    exported = run("custody-ledger", "export", "--out", tmp_path / "e.json", "--json",
                   "--data-dir", data)  # fmt: skip
    assert json.loads(exported.stdout) == {
        "format": "epcis", "out": str(tmp_path / "e.json"), "exported": 0,
        "error_declarations": 0, "skipped": 0, "voids_unmatched": 0,
    }  # fmt: skip


def test_enrol_and_trust_print_json_for_scripts(tmp_path: Path) -> None:
    central, gw = tmp_path / "central", tmp_path / "gw"
    for argv in (("init",), ("pki", "init"), ("pki", "issue-broker", "--host", "localhost")):
        done = run("custody-ledger", "--data-dir", central, *argv)
        assert done.returncode == 0, done.stderr
    init = run("custody-agent", "init", "--site", "KOL-01", "--device", "gw-kol-09",
               "--data-dir", gw)  # fmt: skip
    assert init.returncode == 0, init.stderr
    csr = json.loads(init.stdout)["csr_file"]
    cert = run("custody-ledger", "pki", "issue", "gw-kol-09", "--csr", csr, "--data-dir", central)
    assert cert.returncode == 0, cert.stderr
    enrolled = run("custody-agent", "enrol", "--cert-file", cert.stdout.strip(), "--ca-file",
                   central / "pki" / "ca.crt", "--ledger-key", central / "ledger-public.json",
                   "--broker", "mqtts://localhost:8883", "--json", "--data-dir", gw)  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    assert json.loads(enrolled.stdout)["sync.broker"] == "mqtts://localhost:8883"

    trust = tmp_path / "trust.json"
    added = run("custody-verify", "trust", "--json", "add", central / "ledger-public.json",
                "--trust", trust)  # fmt: skip
    assert added.returncode == 0, added.stderr
    got = json.loads(added.stdout)
    assert (got["state"], got["kind"], got["trust_file"]) == ("pinned", "ledger", str(trust))
    listed = run("custody-verify", "trust", "list", "--json", "--trust", trust)
    (pin,) = json.loads(listed.stdout)["ledgers"]
    assert pin["key_fingerprint"] == got["key_fingerprint"] and pin["id"] == got["id"]
    again = run("custody-verify", "trust", "add", central / "ledger-public.json", "--json",
                "--trust", trust)  # fmt: skip
    assert json.loads(again.stdout)["state"] == "already pinned"
    removed = run("custody-verify", "trust", "remove", got["id"], "--json", "--trust", trust)
    assert json.loads(removed.stdout) == {"removed": ["ledger"], "id": got["id"],
                                          "trust_file": str(trust)}  # fmt: skip


def test_registry_add_prints_json_for_scripts(tmp_path: Path) -> None:
    authority, central = tmp_path / "authority", tmp_path / "central"
    assert run("custody-registry", "init", "--name", "reg", "--dir", authority).returncode == 0
    init = run("custody-ledger", "--data-dir", central, "init", "--authority",
               authority / "authority-public.json")  # fmt: skip
    assert init.returncode == 0, init.stderr
    entry = run("custody-registry", "heartbeat", "--dir", authority).stdout.splitlines()[0]
    argv = ("custody-ledger", "registry", "add", entry, "--json", "--data-dir", central)
    first, again = run(*argv), run(*argv)
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    (logged,) = json.loads(first.stdout)
    assert (logged["file"], logged["seq"], logged["op"], logged["state"]) == (
        entry,
        1,
        "heartbeat",
        "logged",
    )
    assert json.loads(again.stdout)[0]["state"] == "already logged"
