"""Gateway side of lot summaries: running-sum checkpoints and lot contributions (agent.balance).

The sums are checked by opening what the gateway signed with the ledger's sealing key (what the
ledger will do), not by reading the gateway's own bookkeeping back.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from typing import Any

import pytest

from agent.audit import verify_outbox
from agent.balance import payload_of
from agent.outbox import StoredEvent
from agent.recorder import Recorder
from custody.commitment import open_sealed, verify_opening
from custody.errors import CaptureError
from custody.event import SEQ_STRIDE, EventType
from custody.group import ED25519
from custody.mass import kg_to_units
from tests.conftest import Gateway
from tests.support import REPO, run_cli


def opened(gateway: Gateway, event: StoredEvent) -> dict[str, int]:
    """The masses a ledger reads from the event: sealed openings that open the signed points."""
    body = payload_of(event).body
    openings = open_sealed(
        body["sealed"], gateway.ledger.public.sealing_key, gateway.ledger.sealing_secret
    )
    for name, opening in openings.items():
        assert verify_opening(ED25519.point(body["mass"][name]), opening)
    return {name: o.value for name, o in openings.items()}


def test_inputs_outputs_and_voids_add_up(gateway: Gateway, recorder: Recorder) -> None:
    recorder.weighing(gross=400_000, tare=150_000, direction="in", stage="out")  # 25 t ore in
    recorder.weighing(gross=300_000, stage="in")  # first pass: no direction, not counted
    recorder.weighing(bag=12_000, direction="in")  # bags bought in count as input
    bags = []
    for i in range(3):  # a scheduled checkpoint after each bag
        bags.append(recorder.weighing(bag=10_000 + i, lot="L1", direction="out"))
        recorder.checkpoint()
    recorder.weighing(gross=350_000, tare=150_000, direction="out")  # dispatch: cross-check only
    recorder.void(bags[1].event_id, "bag torn, reweighed")
    cp = recorder.checkpoint()
    body = payload_of(cp).body
    assert opened(gateway, cp) == {"in": 250_000 + 12_000, "out": 10_000 + 10_002}
    # Epochs 1..4, linked; a weighing signs no checkpoint of its own (they follow a schedule).
    checkpoints = recorder.outbox.of_type(recorder.key.kid, EventType.CHECKPOINT.value)
    assert [payload_of(c).body["epoch"] for c in checkpoints] == [1, 2, 3, 4]
    assert "prev_checkpoint" not in payload_of(checkpoints[0]).body
    for prev, cur in itertools.pairwise(checkpoints):
        assert payload_of(cur).body["prev_checkpoint"] == prev.event_id
    assert body["upto"] == cp.seq - 1  # everything before it
    # The checkpoint after the second bag counted it (before the void).
    assert opened(gateway, checkpoints[1])["out"] == 10_000 + 10_001


def test_summary_records_sit_at_padded_seqs_that_do_not_count_bags(
    gateway: Gateway, recorder: Recorder
) -> None:
    """1 bag before the first checkpoint, 7 before the lot closes: the seqs and upto a buyer
    sees are the same stride multiples whatever the counts (docs/protocol.md §4)."""
    recorder.weighing(bag=10_000, lot="L1", direction="out")
    first = recorder.checkpoint()
    for i in range(7):
        recorder.weighing(bag=9_000 + i, lot="L1", direction="out")
    contribution, covering = recorder.lot_close("L1")
    shown = [(e.seq, payload_of(e).body.get("upto")) for e in (first, contribution, covering)]
    assert shown == [
        (SEQ_STRIDE, SEQ_STRIDE - 1), (2 * SEQ_STRIDE, None), (3 * SEQ_STRIDE, 3 * SEQ_STRIDE - 1)
    ]  # fmt: skip
    after = recorder.weighing(bag=1, direction="out")  # the next plain record: + 1
    assert after.seq == 3 * SEQ_STRIDE + 1
    assert verify_outbox(recorder.outbox, recorder.key).ok


def test_a_checkpoint_prepared_while_another_process_writes_is_taken_again(
    gateway: Gateway, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sums taken up to one head must not be signed after a record another process wrote
    meanwhile: the writer refuses the checkpoint and the sums are taken again."""
    from agent import balance

    recorder.weighing(bag=10_000, lot="L1", direction="out")
    real = balance.next_sums
    interfered = []

    def slow_sums(*args: Any) -> tuple[int, int]:
        sums = real(*args)
        if not interfered:  # another process records a bag right after the sums were taken
            interfered.append(True)
            with gateway.recorder() as other:
                other.weighing(bag=5_000, lot="L1", direction="out")
        return sums

    monkeypatch.setattr(balance, "next_sums", slow_sums)
    cp = recorder.checkpoint()
    assert opened(gateway, cp)["out"] == 15_000  # both bags, not only the first
    assert payload_of(cp).body["upto"] == cp.seq - 1
    assert verify_outbox(recorder.outbox, recorder.key).ok


def test_lot_close_commits_the_non_voided_bags_once(gateway: Gateway, recorder: Recorder) -> None:
    recorder.weighing(bag=15_025, lot="L1", direction="out")
    wrong = recorder.weighing(bag=15_000, lot="L1", direction="out")
    recorder.weighing(bag=14_990, lot="L2", direction="out")
    recorder.void(wrong.event_id, "another lot")
    contribution, checkpoint = recorder.lot_close("L1")
    assert payload_of(contribution).body["lot"] == "L1"
    assert opened(gateway, contribution) == {"total": 15_025}
    cp = payload_of(checkpoint).body
    assert cp["upto"] >= contribution.seq  # the contribution's bags are under this checkpoint
    assert opened(gateway, checkpoint)["out"] == 15_025 + 14_990
    with pytest.raises(CaptureError, match="already closed"):
        recorder.lot_close("L1")
    with pytest.raises(CaptureError, match="no bags"):
        recorder.lot_close("L-EMPTY")


def test_sums_beyond_one_weighings_bound(gateway: Gateway, recorder: Recorder) -> None:
    biggest = kg_to_units("429000000")  # close to the per-weighing bound
    for _ in range(12):
        recorder.weighing(gross=biggest, direction="in")
    assert opened(gateway, recorder.checkpoint())["in"] == 12 * biggest  # > 2^32 units


def test_two_processes_never_repeat_an_epoch(gateway: Gateway) -> None:
    """The scan console and the gateway service share an outbox: epochs stay a chain, and
    every checkpoint covers every record before it although the other process writes
    between its sums and its signature (the writer refuses it, the sums are taken again)."""
    script = (
        "import sys\nfrom pathlib import Path\nfrom agent.recorder import Recorder\n"
        "with Recorder(Path(sys.argv[1])) as rec:\n"
        "    for i in range(15):\n"
        "        rec.weighing(bag=1000 + i, lot='L9', direction='out')\n"
        "        rec.checkpoint()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(gateway.data_dir)], cwd=REPO)
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(120) == 0
    with gateway.recorder() as rec:
        checkpoints = rec.outbox.of_type(rec.key.kid, EventType.CHECKPOINT.value)
        epochs = [payload_of(c).body["epoch"] for c in checkpoints]
        assert epochs == list(range(1, 31))
        for prev, cur in itertools.pairwise(checkpoints):
            assert payload_of(cur).body["prev_checkpoint"] == prev.event_id
        last = opened(gateway, checkpoints[-1])
        assert last["out"] == 2 * sum(1000 + i for i in range(15))
        assert all(payload_of(c).body["upto"] == c.seq - 1 for c in checkpoints)


def test_cli_lot_close_and_checkpoint(gateway: Gateway) -> None:
    with gateway.recorder() as rec:
        rec.weighing(bag=20_000, lot="LOT-7", direction="out")
    done = run_cli("--data-dir", str(gateway.data_dir), "lot", "close", "LOT-7", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["contribution"]["type"] == "lot_contribution"
    assert out["checkpoint"]["type"] == "checkpoint"
    again = run_cli("--data-dir", str(gateway.data_dir), "lot", "close", "LOT-7")
    assert again.returncode == 6 and "already closed" in again.stderr
    done = run_cli("--data-dir", str(gateway.data_dir), "checkpoint")
    assert done.returncode == 0 and "recorded checkpoint" in done.stdout


def test_a_voided_contribution_is_listed_by_the_next_checkpoint(
    gateway: Gateway, recorder: Recorder
) -> None:
    recorder.weighing(bag=10_000, lot="L1", direction="out")
    contribution, closing = recorder.lot_close("L1")
    assert "voided" not in payload_of(closing).body
    recorder.void(contribution.event_id, "closed the wrong lot")
    recorder.seal_scan("S-1")
    listed = recorder.checkpoint()
    assert payload_of(listed).body["voided"] == [contribution.event_id]
    # Listed once: the checkpoint after does not repeat it.
    assert "voided" not in payload_of(recorder.checkpoint()).body


@pytest.mark.parametrize(
    "voided", [[], [bytes(32)] * 2, [bytes([2]) * 32, bytes([1]) * 32], [b"short"], "x"]
)
def test_a_checkpoint_lists_voided_contributions_in_one_encoding(voided: Any) -> None:
    from custody.errors import SchemaError
    from custody.event import BODY_SCHEMAS

    body = {"epoch": 1, "upto": 0, "mass": {"in": bytes(32), "out": bytes(32)},
            "sealed": bytes(64), "voided": voided}  # fmt: skip
    with pytest.raises(SchemaError, match="voided"):
        BODY_SCHEMAS[EventType.CHECKPOINT].validate(body, EventType.CHECKPOINT)
