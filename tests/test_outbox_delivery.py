"""Delivery states: nothing leaves the outbox without a ledger ack that matches our chain."""

from __future__ import annotations

import pytest

from agent.outbox import RecordState
from agent.outbox.delivery import apply_ack, mark_sent, next_to_send, requeue_sent
from agent.recorder import Recorder
from custody.errors import ChainError, VerificationError


def states(rec: Recorder) -> list[str]:
    return [str(e.state) for e in rec.outbox.iter_chain(rec.key.kid)]


def record(rec: Recorder, n: int) -> None:
    for i in range(n):
        rec.seal_scan(f"S-{i}")


def test_send_oldest_first_within_budgets(recorder: Recorder) -> None:
    record(recorder, 30)
    kid = recorder.key.kid
    batch = next_to_send(recorder.outbox, kid, max_events=10)
    assert [e.seq for e in batch] == list(range(1, 11))
    small = next_to_send(recorder.outbox, kid, max_bytes=len(batch[0].envelope) * 3)
    assert [e.seq for e in small] == [1, 2, 3]
    one = next_to_send(recorder.outbox, kid, max_bytes=1)
    assert [e.seq for e in one] == [1]  # never an empty batch while something is pending


def test_ack_releases_the_prefix_and_only_the_prefix(recorder: Recorder) -> None:
    record(recorder, 9)  # seqs 1..10 with the boot event
    kid = recorder.key.kid
    sent = next_to_send(recorder.outbox, kid)
    assert mark_sent(recorder.outbox, kid, [e.seq for e in sent]) == 10
    assert next_to_send(recorder.outbox, kid) == []  # sent records are not sent twice
    outcome = apply_ack(recorder.outbox, kid, seq=6, event_id=sent[5].event_id)
    assert (outcome.acked, outcome.acked_through) == (6, 6)
    assert states(recorder) == ["acked"] * 6 + ["sent"] * 4
    # A repeated (replayed) ack changes nothing.
    assert apply_ack(recorder.outbox, kid, seq=6, event_id=sent[5].event_id).acked == 0


def test_ack_for_an_event_id_that_is_not_ours_releases_nothing(recorder: Recorder) -> None:
    record(recorder, 4)
    kid = recorder.key.kid
    mark_sent(recorder.outbox, kid, range(1, 6))
    with pytest.raises(VerificationError, match="not ours"):
        apply_ack(recorder.outbox, kid, seq=5, event_id=bytes(32))
    with pytest.raises(ChainError, match="never recorded"):
        apply_ack(recorder.outbox, kid, seq=99, event_id=bytes(32))
    assert states(recorder) == ["sent"] * 5


def test_rejections_are_kept_with_their_reason(recorder: Recorder) -> None:
    record(recorder, 4)
    kid = recorder.key.kid
    events = list(recorder.outbox.iter_chain(kid))
    mark_sent(recorder.outbox, kid, [e.seq for e in events])
    outcome = apply_ack(
        recorder.outbox, kid, seq=2, event_id=events[1].event_id,
        rejected=[(3, events[2].event_id, "key revoked")],
    )  # fmt: skip
    assert (outcome.acked, outcome.rejected) == (2, 1)
    rejected = recorder.outbox.events(state=RecordState.REJECTED)
    assert [(e.seq, e.reject_reason) for e in rejected] == [(3, "key revoked")]
    # A later ack over the rejected seq does not turn it into acked: rejected is final.
    apply_ack(recorder.outbox, kid, seq=5, event_id=events[4].event_id)
    assert states(recorder) == ["acked", "acked", "rejected", "acked", "acked"]
    assert recorder.outbox.counts_by_state()["rejected"] == 1


def test_unacked_sent_records_are_requeued_on_timeout_or_reconnect(recorder: Recorder) -> None:
    record(recorder, 3)
    kid = recorder.key.kid
    mark_sent(recorder.outbox, kid, [1, 2], now_ms=1_000)
    mark_sent(recorder.outbox, kid, [3], now_ms=9_000)
    assert requeue_sent(recorder.outbox, kid, sent_before_ms=5_000) == 2
    assert states(recorder) == ["pending", "pending", "sent", "pending"]
    assert requeue_sent(recorder.outbox, kid) == 1  # a reconnect resends everything unacked
    assert [e.seq for e in next_to_send(recorder.outbox, kid)] == [1, 2, 3, 4]


def test_acked_records_survive_restarts_and_are_never_sent_again(recorder: Recorder) -> None:
    record(recorder, 2)
    kid = recorder.key.kid
    events = list(recorder.outbox.iter_chain(kid))
    mark_sent(recorder.outbox, kid, [e.seq for e in events])
    apply_ack(recorder.outbox, kid, seq=3, event_id=events[2].event_id)
    assert requeue_sent(recorder.outbox, kid) == 0
    assert next_to_send(recorder.outbox, kid) == []
