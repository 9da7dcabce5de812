"""``custody-agent scan`` driven through a real 40x12 pseudo-terminal (pexpect).

Each test starts the real command, types what a keyboard-wedge scanner sends (AIM
identifier, code, Enter), reads the screen, and then checks the outbox with
``custody-agent events verify`` and by decoding the signed events.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from agent.outbox import Outbox
from agent.recorder import Recorder
from agent.scan.console import save_lot
from custody import cbor, cose
from tests.conftest import Gateway
from tests.support import REPO, run_cli
from tests.test_scan_session import hri, sscc

ROWS, COLS = 12, 40
_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    e.update({"LANG": "en_US.UTF-8", "LC_ALL": "", "LANGUAGE": "", "TERM": "xterm"})
    e.update(extra)
    return e


class Console:
    """One ``custody-agent scan`` process on a pty of ROWS x COLS."""

    def __init__(self, data_dir: Path, *args: str, **env_extra: str) -> None:
        self.child = pexpect.spawn(
            sys.executable, ["-m", "agent.cli", "--data-dir", str(data_dir), "scan", *args],
            cwd=str(REPO), env=env(**env_extra), dimensions=(ROWS, COLS),
            encoding="utf-8", timeout=60,
        )  # fmt: skip
        self.transcript: list[str] = []

    def expect(self, pattern: str) -> str:
        """Wait for ``pattern`` (plain text); return the output up to and including it."""
        self.child.expect_exact(pattern)
        seen = self.child.before + self.child.after
        self.transcript.append(seen)
        return seen

    def send(self, line: str) -> None:
        self.child.sendline(line)

    def quit(self, bye: str = "Bye") -> None:
        self.send("q")
        self.child.expect(pexpect.EOF)
        self.transcript.append(self.child.before)
        self.child.close()
        assert self.child.exitstatus == 0
        assert bye in self.transcript[-1]

    def kill(self) -> None:
        self.child.kill(signal.SIGKILL)
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.signalstatus == signal.SIGKILL

    def lines(self) -> list[str]:
        # Cursor moves (CUP) and erases (ED) start a new row; colours take no columns.
        text = re.sub(r"\x1b\[[0-9;]*[HJ]", "\n", "".join(self.transcript))
        text = _CSI.sub("", text).replace("\a", "")
        return re.split(r"\r\n|\n|\r", text)


def events(data_dir: Path) -> list[tuple[int, str, dict[str, Any], dict[str, int]]]:
    """(seq, type, body, clear masses) of every event, decoded from the signed envelopes."""
    outbox = Outbox.open(data_dir / "outbox.sqlite", check=None, create=False)
    try:
        out = []
        for e in outbox.events():
            payload = cbor.decode(cose.decode_sign1(e.envelope).payload)
            masses = {k: v for k, (v, _) in outbox.openings(e.event_id).items()}
            out.append((e.seq, e.type, payload["body"], masses))
        return out
    finally:
        outbox.close()


def verify(data_dir: Path) -> None:
    result = run_cli("--data-dir", str(data_dir), "events", "verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def live_bags(data_dir: Path) -> dict[str, str]:
    """seal -> lot of every aggregation ADD not voided."""
    evs = events(data_dir)
    voided = {b["target"] for _, t, b, _ in evs if t == "void"}
    bags: dict[str, str] = {}
    outbox = Outbox.open(data_dir / "outbox.sqlite", check=None, create=False)
    try:
        ids = {e.seq: e.event_id for e in outbox.events()}
    finally:
        outbox.close()
    for seq, type_, body, _ in evs:
        if type_ == "aggregation" and ids[seq] not in voided:
            for seal in body["children"]:
                bags[seal] = body["lot"]
    return bags


def assert_fits(console: Console) -> None:
    for line in console.lines():
        assert len(line) <= COLS, f"{len(line)} columns: {line!r}"


@pytest.fixture
def scale_pty() -> Iterator[tuple[int, str]]:
    """A pseudo-terminal standing in for the platform scale: write frames to ``fd``."""
    master, slave = os.openpty()
    tty.setraw(master)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def scale_frame(kg: str, stable: bool = True) -> bytes:
    # A&D / CAS (device-protocols.md §1.4): ST = stable, US = unstable, gross, kg.
    return f"{'ST' if stable else 'US'},GS,+{float(kg):07.1f}kg\r\n".encode("ascii")


# --- the tests --------------------------------------------------------------------------------
def test_scan_tag_duplicate_void_counts_on_a_40x12_pty(gateway: Gateway) -> None:
    d = gateway.data_dir
    c = Console(d)
    c.expect("Scan or type the LOT id")
    c.send("LOT-2026-0042")
    c.expect("0 bag(s) today")
    for n in (1, 2, 3):
        c.send("]C1" + sscc(n))
        c.expect(f"bag {n} today")
    code = sscc(4)
    c.send("]C1" + code[:-1] + str((int(code[-1]) + 3) % 10))
    c.expect("Wrong check digit")
    c.send("]C1" + sscc(2))
    c.expect("ALREADY")
    c.send("v")
    c.expect("y = yes")
    c.send("y")
    c.expect("removed from lot")
    c.send("c")
    c.expect("LOT-2026-0042: 2 bag(s)")
    c.quit()
    assert_fits(c)
    out = "".join(c.transcript)
    assert "\x1b[1;30;42m" in out  # the green OK banner
    assert "\x1b[1;97;41m" in out  # the red ERROR banner
    assert "\a\a\a" in out  # the duplicate's bells

    verify(d)
    evs = events(d)
    assert [s for s, *_ in evs] == list(range(1, len(evs) + 1))  # gapless
    aggs = [b for _, t, b, _ in evs if t == "aggregation"]
    assert aggs == [
        {"lot": "LOT-2026-0042", "children": [hri(sscc(n))], "action": "ADD"} for n in (1, 2, 3)
    ]
    (void,) = [b for _, t, b, _ in evs if t == "void"]
    assert void["reason"].startswith("voided by the operator")
    assert live_bags(d) == {hri(sscc(1)): "LOT-2026-0042", hri(sscc(2)): "LOT-2026-0042"}


def test_sigkill_and_restart_bring_back_lot_and_counts(gateway: Gateway) -> None:
    d = gateway.data_dir
    c = Console(d)
    c.expect("LOT id")
    c.send("LOT-A")
    c.expect("0 bag(s) today")
    c.send("SEAL-A-1")
    c.expect("bag 1 today")
    c.send("l")
    c.expect("New lot")
    c.send("LOT-B")
    c.expect("Lot LOT-B")
    c.send("SEAL-B-1")
    c.expect("bag 1 today")
    c.kill()

    c = Console(d)
    c.expect("LOT LOT-B | 1 today")  # the status line: lot and count came back
    c.send("SEAL-B-1")
    c.expect("ALREADY")  # seen, from the outbox
    c.send("c")
    c.expect("LOT-B: 1 bag(s)")
    c.send("l")
    c.expect("New lot")
    c.send("LOT-C")
    c.expect("Lot LOT-C")
    c.kill()  # the lot was switched, no bag recorded yet: it still comes back
    c = Console(d)
    c.expect("LOT LOT-C | 0 today")
    c.quit()
    verify(d)
    assert live_bags(d) == {"SEAL-A-1": "LOT-A", "SEAL-B-1": "LOT-B"}


def test_scale_weight_is_taken_only_when_stable(gateway: Gateway, scale_pty: Any) -> None:
    d = gateway.data_dir
    fd, port = scale_pty
    c = Console(d, "--scale-port", f"ad-cas@{port}")  # the one option naming the dialect
    c.expect("LOT id")
    c.send("LOT-W")
    c.expect("today")
    c.send("]C1" + sscc(11))
    c.expect("s = no weight")
    os.write(fd, scale_frame("1480.0", stable=False) * 3)
    c.expect("settling")
    os.write(fd, scale_frame("1502.5") * 3)
    c.expect("1502.5 kg")
    c.expect("bag 1 today")
    # The next bag: the platform still holds the last one, so no weight is taken.
    c.send("]C1" + sscc(12))
    c.expect("s = no weight")
    os.write(fd, scale_frame("1502.5") * 4)
    c.expect("remove the last")
    os.write(fd, scale_frame("0.0") + scale_frame("1611.0") * 3)
    c.expect("bag 2 today")
    # A bag without a weight: manual skip.
    c.send("SEAL-NOSCALE")
    c.expect("s = no weight")
    c.send("s")
    c.expect("bag 3 today")
    c.quit()
    assert_fits(c)
    verify(d)
    weighings = [(b, m) for _, t, b, m in events(d) if t == "weighing"]
    assert [(b["seals"], b["lot"], m) for b, m in weighings] == [
        ([hri(sscc(11))], "LOT-W", {"bag": 15025}),
        ([hri(sscc(12))], "LOT-W", {"bag": 16110}),
    ]
    assert all(b["scale"] == port and "manual" not in b for b, _ in weighings)
    assert len(live_bags(d)) == 3


def test_sigkill_while_waiting_for_the_scale_leaves_nothing_half_written(
    gateway: Gateway, scale_pty: Any
) -> None:
    d = gateway.data_dir
    _fd, port = scale_pty
    c = Console(d, "--scale-port", port)
    c.expect("LOT id")
    c.send("LOT-K")
    c.expect("today")
    c.send("SEAL-K-1")
    c.expect("s = no weight")
    c.kill()
    assert [t for _, t, _, _ in events(d) if t not in ("boot",)] == []
    c = Console(d, "--scale-port", port)
    c.expect("LOT LOT-K | 0 today")
    c.send("SEAL-K-1")  # not seen: it was never recorded
    c.expect("s = no weight")
    c.send("1501.5")
    c.expect("1501.5 kg (typed)")
    c.quit()
    verify(d)
    assert live_bags(d) == {"SEAL-K-1": "LOT-K"}


def test_a_weighing_left_without_its_bag_is_voided_at_restart(gateway: Gateway) -> None:
    """What a kill between the bag's two events leaves behind, made on purpose."""
    d = gateway.data_dir
    with Recorder(d) as rec:
        rec.weighing(bag=15000, lot="LOT-O", seals=["SEAL-O-1"], scale="/dev/ttyS9")
    c = Console(d)
    c.expect("unfinished record(s) voided")
    c.expect("SEAL-O-1")
    c.send("LOT-O")  # no bag ever joined a lot here, so the lot is asked for
    c.expect("0 bag(s) today")
    c.send("SEAL-O-1")  # may be scanned again
    c.expect("bag 1 today")
    c.quit()
    verify(d)
    evs = events(d)
    (void,) = [b for _, t, b, _ in evs if t == "void"]
    assert void["reason"].startswith("unfinished bag record")
    assert live_bags(d) == {"SEAL-O-1": "LOT-O"}


def test_random_sigkill_while_recording_weighed_bags(gateway: Gateway, scale_pty: Any) -> None:
    """Kill the console while bags (weighing + aggregation) are being recorded, restart:
    the chain verifies and every weighing left has its bag or is voided."""
    d = gateway.data_dir
    _fd, port = scale_pty
    for round_ in range(3):
        c = Console(d, "--scale-port", port)
        c.expect("LOT")
        if round_ == 0:
            c.send("LOT-R")
            c.expect("today")
        for n in range(8):
            c.send(f"SEAL-R{round_}-{n}")
            c.send("1500.0")
        # Killed after this round's bag 2 or later was shown OK, while the next
        # ones are being recorded (not the typed echo: the OK screen's next line).
        c.expect(f"SEAL-R{round_}-{1 + round_}\r\n-> lot")
        c.kill()
    c = Console(d, "--scale-port", port)
    c.expect("LOT LOT-R")
    c.quit()
    verify(d)
    evs = events(d)
    bags = live_bags(d)
    voided = {b["target"] for _, t, b, _ in evs if t == "void"}
    outbox = Outbox.open(d / "outbox.sqlite", check=None, create=False)
    try:
        ids = {e.seq: e.event_id for e in outbox.events()}
    finally:
        outbox.close()
    for seq, type_, body, _ in evs:
        if type_ == "weighing" and ids[seq] not in voided:
            assert body["seals"][0] in bags, f"weighing seq {seq} has no bag"
    assert bags  # some bags made it


def test_french_screen(gateway: Gateway) -> None:
    d = gateway.data_dir
    c = Console(d, "--lang", "fr")
    c.expect("Scannez ou tapez le n° de LOT")
    c.send("LOT-FR")
    c.expect("0 sac(s) aujourd'hui")
    c.send("]C1" + sscc(21))
    c.expect("sac 1 auj.")
    c.send("]C1" + sscc(21))
    c.expect("DÉJÀ SCANNÉ")
    c.send("a")
    c.expect("o = oui")
    c.send("o")
    c.expect("retiré du lot")
    c.quit("Au revoir")
    assert_fits(c)
    assert "ERROR" not in "".join(c.lines())


def test_language_from_lang_and_no_color(gateway: Gateway) -> None:
    c = Console(gateway.data_dir, LANG="fr_CD.UTF-8", NO_COLOR="1")
    c.expect("Scannez ou tapez")
    c.send("LOT-1")
    c.expect("sac(s)")
    c.quit("Au revoir")
    assert "\x1b[1;" not in "".join(c.transcript)  # no colour at all


def test_seal_recorded_by_another_process_is_a_duplicate(gateway: Gateway) -> None:
    d = gateway.data_dir
    c = Console(d)
    c.expect("LOT id")
    c.send("LOT-X")
    c.expect("today")
    result = run_cli("--data-dir", str(d), "record", "seal", "--seal-id", "SEAL-CLI-1")
    assert result.returncode == 0, result.stderr
    c.send("SEAL-CLI-1")
    c.expect("ALREADY")
    c.quit()


def test_second_console_on_the_same_data_dir_is_refused(gateway: Gateway) -> None:
    c = Console(gateway.data_dir)
    c.expect("LOT id")
    result = run_cli("--data-dir", str(gateway.data_dir), "scan")
    assert result.returncode == 6
    assert "another scan console is running" in result.stderr
    c.quit()


def test_console_and_another_writer_share_the_outbox(gateway: Gateway) -> None:
    """Two processes, one outbox: the console records bags while a second process
    (standing in for the gateway service) records captures; seqs stay unique and gapless."""
    d = gateway.data_dir
    writer = subprocess.Popen(
        [sys.executable, "tests/crash_writer.py", str(d), "--pause-ms", "5",
         "--max-seconds", "120"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    acked: list[str] = []
    drain: threading.Thread | None = None
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "opening"
        acked.append(writer.stdout.readline())  # its boot event: it is writing
        # Keep reading its acknowledgements so it never blocks on a full pipe.
        drain = threading.Thread(target=lambda: acked.extend(writer.stdout or ()), daemon=True)
        drain.start()
        c = Console(d)
        c.expect("LOT id")
        c.send("LOT-2P")
        c.expect("today")
        for n in range(1, 16):
            c.send("]C1" + sscc(100 + n))
            c.expect(f"bag {n} today")
        c.quit()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if drain is not None:
            drain.join(30)  # it ends at the pipe's EOF
        for pipe in (writer.stdout, writer.stderr):
            if pipe is not None:
                pipe.close()
    verify(d)
    evs = events(d)
    seqs = [s for s, *_ in evs]
    assert seqs == list(range(1, len(seqs) + 1))
    assert sum(1 for _, t, b, _ in evs if t == "seal_scan") > 0  # the other writer wrote too
    assert len(acked) > 15
    assert len(live_bags(d)) == 15


def test_serial_scanner_codes_are_scanned(gateway: Gateway, scale_pty: Any) -> None:
    """A serial scanner (scanner-line dialect) on a port, beside the keyboard."""
    d = gateway.data_dir
    fd, port = scale_pty  # the same kind of pty, standing in for the scanner
    save_lot(d, "LOT-S")
    c = Console(d, "--scanner-port", f"scanner-line@{port}")
    c.expect("LOT LOT-S | 0 today")
    os.write(fd, ("]C1" + sscc(31) + "\r\n").encode("ascii"))
    c.expect("bag 1 today")
    code = sscc(32)
    os.write(fd, ("]C1" + code[:-1] + str((int(code[-1]) + 1) % 10) + "\r\n").encode("ascii"))
    c.expect("Wrong check digit")
    c.quit()
    verify(d)
    assert live_bags(d) == {hri(sscc(31)): "LOT-S"}


def test_camera_reads_a_seal_label(gateway: Gateway, tmp_path: Path) -> None:
    import cv2

    d = gateway.data_dir
    qr = cv2.QRCodeEncoder.create().encode("SEAL-CAM-0001")
    image = cv2.resize(qr, None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST)
    label = tmp_path / "label.png"
    cv2.imwrite(str(label), cv2.copyMakeBorder(image, 40, 40, 40, 40, cv2.BORDER_CONSTANT,
                                               value=255))  # fmt: skip
    save_lot(d, "LOT-CAM")
    c = Console(d, "--camera", str(label))
    c.expect("bag 1 today")
    c.quit()
    assert live_bags(d) == {"SEAL-CAM-0001": "LOT-CAM"}


def test_a_typed_weight_is_never_a_seal_and_typed_gs1_is_checked(gateway: Gateway) -> None:
    """No scale: "1500" typed after a seal was a bag with seal id "1500"; a bracketed GS1
    code with a wrong check digit was a seal too."""
    d = gateway.data_dir
    save_lot(d, "LOT-T")
    c = Console(d)
    c.expect("LOT LOT-T | 0 today")
    c.send("SEAL-T-1")
    c.expect("bag 1 today")
    c.send("1500")
    c.expect("1500 looks like a weight")
    c.expect("No weighing here: scan the SEAL")
    c.send("(00)061414112345678906")
    c.expect("Wrong check digit")
    c.expect("Scan the label again")
    c.send("(00)061414112345678902")
    c.expect("bag 2 today")
    c.send("c")
    c.expect("Refused this session: 2")
    c.quit()
    assert_fits(c)
    verify(d)
    assert live_bags(d) == {"SEAL-T-1": "LOT-T", "(00)061414112345678902": "LOT-T"}


def test_numeric_seals_setting_takes_a_bare_number_as_a_seal(gateway: Gateway) -> None:
    d = gateway.data_dir
    result = run_cli("--data-dir", str(d), "config", "set", "scan.numeric_seals", "true")
    assert result.returncode == 0, result.stderr
    save_lot(d, "LOT-N")
    c = Console(d)
    c.expect("LOT LOT-N | 0 today")
    c.send("004711")
    c.expect("bag 1 today")
    c.send("1500.5")
    c.expect("1500.5 looks like a weight")
    c.quit()
    assert live_bags(d) == {"004711": "LOT-N"}


def test_implausible_bag_masses_are_refused_typed_or_weighed(
    gateway: Gateway, scale_pty: Any
) -> None:
    d = gateway.data_dir
    fd, port = scale_pty
    save_lot(d, "LOT-P")
    c = Console(d, "--scale-port", port, "--scale-dialect", "ad-cas")
    c.expect("LOT LOT-P | 0 today")
    c.send("1500")  # the weight before the seal
    c.expect("Scan the SEAL first, then weigh")
    c.send("]C1" + sscc(41))
    c.expect("s = no weight")
    c.send("30680")
    c.expect("30680 kg: too heavy for a bag")
    c.expect("Type the weight again in kg")
    os.write(fd, scale_frame("30680.0") * 4)
    c.expect("30680.0 kg: too heavy for a bag")
    c.expect("Check the scale, weigh again")
    os.write(fd, scale_frame("0.0") + scale_frame("1502.5") * 3)
    c.expect("bag 1 today")
    c.send("c")
    c.expect("Refused this session: 3")
    c.quit()
    assert "Refused this session: 3" in c.transcript[-1]  # said again at the end
    assert_fits(c)
    verify(d)
    weighings = [(b["seals"], m) for _, t, b, m in events(d) if t == "weighing"]
    assert weighings == [([hri(sscc(41))], {"bag": 15025})]
    assert live_bags(d) == {hri(sscc(41)): "LOT-P"}


def test_bag_range_settings_are_used(gateway: Gateway, scale_pty: Any) -> None:
    d = gateway.data_dir
    _fd, port = scale_pty
    result = run_cli("--data-dir", str(d), "config", "set",
                     "scan.bag_min_kg", "20", "scan.bag_max_kg", "60")  # fmt: skip
    assert result.returncode == 0, result.stderr
    save_lot(d, "LOT-R")
    c = Console(d, "--scale-port", port)
    c.expect("LOT LOT-R | 0 today")
    c.send("SEAL-R-1")
    c.expect("s = no weight")
    c.send("61")
    c.expect("A bag is 20 to 60 kg")
    c.send("50")
    c.expect("50 kg (typed)")
    c.quit()
    assert [m for _, t, _, m in events(d) if t == "weighing"] == [{"bag": 500}]


def test_a_bag_range_upside_down_is_a_config_error(gateway: Gateway) -> None:
    d = gateway.data_dir
    result = run_cli("--data-dir", str(d), "config", "set",
                     "scan.bag_min_kg", "3000", "scan.bag_max_kg", "2000")  # fmt: skip
    assert result.returncode != 0
    assert "scan.bag_min_kg" in result.stderr
    assert "scan.bag_max_kg = 2000" in result.stderr


def test_scan_help_is_there() -> None:
    result = run_cli("scan", "--help")
    assert result.returncode == 0
    assert "scan-and-tag" in result.stdout
    assert "--lang" in result.stdout
