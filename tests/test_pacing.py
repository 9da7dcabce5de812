"""Uplink pacing with an injected clock: a byte-rate cap and AIMD batch sizes."""

from __future__ import annotations

import pytest

from sync.pacing import BatchSizer, TokenBucket


def test_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(rate=0, burst=0)
    assert bucket.wait_time(10**9, now=0.0) == 0.0


def test_rate_cap_holds_over_time() -> None:
    bucket = TokenBucket(rate=1000, burst=2000)  # 1 kB/s, 2 kB bursts
    now, sent = 0.0, 0
    while now < 60.0:
        wait = bucket.wait_time(500, now)
        now += wait
        bucket.spend(500, now)
        sent += 500
    # 60 s at 1 kB/s plus the initial burst; never more.
    assert 60_000 <= sent <= 60_000 + 2_000 + 500


def test_a_batch_larger_than_the_burst_waits_for_a_full_bucket_not_forever() -> None:
    bucket = TokenBucket(rate=100, burst=1000)
    assert bucket.wait_time(5000, now=0.0) == 0.0
    bucket.spend(5000, now=0.0)
    assert bucket.wait_time(5000, now=0.0) == pytest.approx(10.0)


def test_batch_size_grows_on_fast_acks_and_halves_on_slow_ones() -> None:
    sizer = BatchSizer(minimum=4096, maximum=65536, step=4096, current=8192)
    for _ in range(100):
        sizer.on_puback(0.1)
    assert sizer.current == 65536
    sizer.on_puback(5.0)
    assert sizer.current == 32768
    sizer.on_disconnect()
    assert sizer.current == 16384
    for _ in range(20):
        sizer.on_disconnect()
    assert sizer.current == 4096
