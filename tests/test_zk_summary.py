"""Lot summaries end to end: real gateways and ledger (lab.lots), the prover, the offline verifier.

Completeness on random lots; soundness against a bundle with any byte flipped and against
dishonest ledgers (each a test double of the prover); the policy; and the custody-verify CLI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger.summary as summary_mod
from custody import cbor
from custody.errors import ProofError
from custody.zk.rangeproof import RangeProver
from lab.lots import LotScenario, build_lot
from ledger.disclosure import DisclosureRefused, LotDisclosure
from ledger.summary import SummaryError, SummaryResult, build_summary
from ledger.verify.bundle import PublicPoints, Statement, verify_bundle
from ledger.verify.policy import PUBLISHED_POLICIES, Policy
from tests.support import REPO

POLICY = PUBLISHED_POLICIES[2]


def summarise(
    scenario: LotScenario, policy: Policy = POLICY, audience: str = "buyer"
) -> SummaryResult:
    store = scenario.store()
    try:
        return build_summary(
            store, scenario.keys, scenario.ledger_dir, scenario.lot, audience=audience,
            policy=policy,
        )  # fmt: skip
    finally:
        store.close()


def verify(data: bytes, scenario: LotScenario, policy: Policy = POLICY) -> Any:
    return verify_bundle(
        data, scenario.keys.public, scenario.authority, policies={policy.version: policy}
    )


@pytest.fixture(scope="module")
def typical(tmp_path_factory: pytest.TempPathFactory) -> tuple[LotScenario, SummaryResult]:
    scenario = build_lot(tmp_path_factory.mktemp("lot"), sites=3, checkpoints_per_site=4)
    return scenario, summarise(scenario)


# --- completeness ----------------------------------------------------------------------


def test_an_honest_bundle_verifies_and_states_the_lot(
    typical: tuple[LotScenario, SummaryResult],
) -> None:
    scenario, result = typical
    claim = verify(result.bundle, scenario)
    assert claim.lot == scenario.lot
    assert claim.total == scenario.total  # exactly the sum of the signed bags
    assert claim.sites == tuple(scenario.sites)
    assert claim.refiner == scenario.refiner
    # 4 output bags and the lot's closing checkpoint per site, all inside the window of 12.
    assert claim.balance_checks == result.balance_checks == 3 * 5
    # Nothing per site is in the claim; the bundle names no per-site mass in clear.
    text = json.dumps(cbor.decode(result.bundle)["statement"], default=str)
    for bags in scenario.bag_units.values():
        assert str(sum(bags)) not in text


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sites=st.integers(1, 4),
    checkpoints=st.integers(1, 4),
    bags=st.integers(1, 3),
    delta=st.integers(-3, 3),
    seed=st.integers(0, 2**16),
)
def test_random_honest_lots_verify(
    tmp_path_factory: pytest.TempPathFactory, sites: int, checkpoints: int, bags: int,
    delta: int, seed: int,
) -> None:  # fmt: skip
    checkpoints = max(checkpoints, bags)
    scenario = build_lot(
        tmp_path_factory.mktemp("lot"), sites=sites, checkpoints_per_site=checkpoints,
        bags_per_site=bags, receipt_delta=delta, seed=seed,
    )  # fmt: skip
    policy = dataclasses.replace(POLICY, window=checkpoints)
    claim = verify(summarise(scenario, policy).bundle, scenario, policy)
    assert claim.total == scenario.total
    assert claim.balance_checks == sites * checkpoints


def test_zero_mass_bags_and_a_single_bag_lot(tmp_path: Path) -> None:
    scenario = build_lot(tmp_path, sites=1, checkpoints_per_site=1, bags_per_site=1)
    claim = verify(summarise(scenario).bundle, scenario)
    assert claim.sites == ("MINE-01",)
    zero = build_lot(
        tmp_path / "zero", sites=2, checkpoints_per_site=2, bags_per_site=2, bag_range=(0, 0)
    )
    assert zero.total == 0
    assert verify(summarise(zero).bundle, zero).total == 0


def test_verification_cost_does_not_grow_with_bags(tmp_path: Path) -> None:
    """The verifier sees contributions and checkpoints, never bags: same record count."""
    few = build_lot(tmp_path / "few", sites=2, checkpoints_per_site=6, bags_per_site=1)
    many = build_lot(tmp_path / "many", sites=2, checkpoints_per_site=6, bags_per_site=6)
    a, b = summarise(few), summarise(many)
    assert a.records == b.records
    assert abs(len(a.bundle) - len(b.bundle)) < 64  # only varint widths differ


# --- soundness: bytes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[LotScenario, bytes, Policy]:
    """The smallest real bundle: one site, one bag, small masses, short range proofs."""
    scenario = build_lot(
        tmp_path_factory.mktemp("tiny"), sites=1, checkpoints_per_site=1, bags_per_site=1,
        bag_range=(10, 10), ore_margin=10,
    )  # fmt: skip
    policy = dataclasses.replace(POLICY, version=99, balance_bits=8, tolerance_bits=4, window=1)
    return scenario, summarise(scenario, policy).bundle, policy


def test_the_tiny_bundle_verifies(tiny: tuple[LotScenario, bytes, Policy]) -> None:
    scenario, data, policy = tiny
    assert verify(data, scenario, policy).total == scenario.total


def test_flipping_any_byte_of_a_small_bundle_fails(
    tiny: tuple[LotScenario, bytes, Policy],
) -> None:
    scenario, data, policy = tiny
    accepted = []
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01 if i % 2 else 0x80
        try:
            verify(bytes(bad), scenario, policy)
        except ProofError:
            continue
        accepted.append(i)
    assert accepted == []


@pytest.mark.parametrize(
    "statement_change",
    [
        {"sites": ["MINE-01", 1]},  # text and a number do not sort
        {"sites": [["MINE-01"]]},  # an array cannot go in a set
        {"policy_tol": "5"},  # a per-mille tolerance that is text
    ],
)
def test_a_statement_with_fields_of_another_type_is_a_proof_error(
    tiny: tuple[LotScenario, bytes, Policy], statement_change: dict[str, Any]
) -> None:
    scenario, data, policy = tiny
    raw = cbor.decode(data)
    statement = dict(raw["statement"])
    if "policy_tol" in statement_change:
        statement["policy"] = {**statement["policy"], "tol": statement_change["policy_tol"]}
    else:
        statement.update(statement_change)
    with pytest.raises(ProofError, match="decoding"):
        verify(cbor.encode({**raw, "statement": statement}), scenario, policy)


def test_flipping_sampled_bytes_of_a_large_bundle_fails(
    typical: tuple[LotScenario, SummaryResult],
) -> None:
    scenario, result = typical
    rng = random.Random(7)
    data = result.bundle
    for i in rng.sample(range(len(data)), 40):
        bad = bytearray(data)
        bad[i] ^= 1 << rng.randrange(8)
        with pytest.raises(ProofError):
            verify(bytes(bad), scenario)


def test_truncated_extended_and_non_cbor_bundles_fail(
    typical: tuple[LotScenario, SummaryResult],
) -> None:
    scenario, result = typical
    for bad in (result.bundle[:-1], result.bundle + b"\x00", b"not cbor", b""):
        with pytest.raises(ProofError):
            verify(bad, scenario)


# --- soundness: dishonest ledgers (test doubles of the prover) -----------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> LotScenario:
    return build_lot(tmp_path, sites=2, checkpoints_per_site=3, bags_per_site=2)


def test_an_inflated_total_is_caught(fresh: LotScenario, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Statement

    def inflated(lot: str, refiner: str, total: int, *rest: Any) -> Any:
        return real(lot, refiner, total + 1, *rest)

    monkeypatch.setattr(summary_mod, "Statement", inflated)
    data = summarise(fresh).bundle
    with pytest.raises(ProofError, match="zero-knowledge proofs"):
        verify(data, fresh)


TRANSCRIPT_ELEMENTS = [
    "statement", "log", "registry", "records", "contrib_sum", "receipt", "tol_low", "tol_high",
    "stocks", "balances",
]  # fmt: skip


@pytest.mark.parametrize("omitted", TRANSCRIPT_ELEMENTS)
def test_a_prover_that_omits_a_transcript_element_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, omitted: str
) -> None:
    from custody.zk.transcript import Transcript
    from ledger.verify import bundle as bundle_mod

    # With an opening stock, so that the stocks' points are in the statement too.
    scenario = build_lot(tmp_path, sites=1, checkpoints_per_site=2, bags_per_site=1,
                         opening_stock=1_000)  # fmt: skip

    def deficient(
        statement: Any, log: bytes, registry: Any, records: Any, points: PublicPoints,
        group: Any = None,
    ) -> Transcript:  # fmt: skip
        tr = Transcript(bundle_mod.TRANSCRIPT_DOMAIN)
        if omitted != "statement":
            tr.message("statement", cbor.encode(statement.to_map()))
        if omitted != "log":
            tr.message("log", log)
        if omitted != "registry":
            for entry in registry:
                tr.integer("registry/index", entry.index)
                tr.message("registry/entry", entry.data)
        if omitted != "records":
            for rec in records:
                tr.integer("record/index", rec.index)
                tr.message("record/envelope", rec.data)
        for name in ("contrib_sum", "receipt", "tol_low", "tol_high"):
            if omitted != name:
                tr.point(name, getattr(points, name))
        if omitted != "stocks":
            tr.points("stocks", list(points.stocks))
        if omitted != "balances":
            tr.points("balances", list(points.balances))
        return tr

    monkeypatch.setattr(summary_mod, "summary_transcript", deficient)
    data = summarise(scenario).bundle
    with pytest.raises(ProofError, match="Fiat-Shamir"):
        verify(data, scenario)


def test_a_proof_replayed_into_another_summary_is_caught(fresh: LotScenario) -> None:
    first, second = summarise(fresh), summarise(fresh)  # same lot, same W: allowed twice
    verify(second.bundle, fresh)
    a, b = cbor.decode(first.bundle), cbor.decode(second.bundle)
    b["proof"] = a["proof"]
    with pytest.raises(ProofError, match="Fiat-Shamir"):
        verify(cbor.encode(b), fresh)
    a["statement"]["lot"] = "LOT-SOMETHING-ELSE"
    with pytest.raises(ProofError):
        verify(cbor.encode(a), fresh)


def test_a_site_shipping_more_than_it_took_in_gets_no_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    over = build_lot(tmp_path, sites=2, checkpoints_per_site=3, bags_per_site=2, ore_margin=-40_000)
    with pytest.raises(SummaryError, match="mass balance claim is false"):
        summarise(over)
    # A ledger that proves the balance anyway (bits of the value mod 2^48) is caught.
    real = RangeProver

    class Wrapping(real):  # type: ignore[valid-type,misc]
        def __init__(self, label: str, value: int, blinding: Any, bits: int, group: Any) -> None:
            super().__init__(label, value % 2**bits, blinding, bits, group)
            self.value = value % 2**bits

    monkeypatch.setattr(summary_mod, "RangeProver", Wrapping)
    monkeypatch.setattr(summary_mod, "_in_range", lambda value, bits: True)
    with pytest.raises(ProofError, match="zero-knowledge proofs"):
        verify(summarise(over).bundle, over)


def test_a_receipt_outside_the_tolerance_gets_no_bundle(tmp_path: Path) -> None:
    scenario = build_lot(tmp_path, sites=1, checkpoints_per_site=2, bags_per_site=2)
    far = build_lot(
        tmp_path / "far", sites=1, checkpoints_per_site=2, bags_per_site=2,
        receipt_delta=scenario.total // 100,  # 1% off, the policy allows 0.5%
    )  # fmt: skip
    with pytest.raises(SummaryError, match="tolerance"):
        summarise(far)


# --- policy --------------------------------------------------------------------------------


def test_unpublished_policy_constants_are_refused(fresh: LotScenario) -> None:
    looser = dataclasses.replace(POLICY, recovery_p=2)
    data = summarise(fresh, looser).bundle
    with pytest.raises(ProofError, match="policy"):
        verify_bundle(data, fresh.keys.public, fresh.authority)  # only the published v2


def test_a_second_summary_with_a_different_total_is_refused(
    fresh: LotScenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    summarise(fresh)
    real = LotDisclosure

    def changed(total: int, *rest: Any) -> Any:
        return real(total + 10, *rest)

    monkeypatch.setattr(summary_mod, "LotDisclosure", changed)
    with pytest.raises(DisclosureRefused, match="already proven"):
        summarise(fresh)


def test_single_site_lots_follow_the_policy(tmp_path: Path) -> None:
    scenario = build_lot(tmp_path, sites=1, checkpoints_per_site=1, bags_per_site=1)
    strict = dataclasses.replace(POLICY, single_site_lots=False)
    with pytest.raises(DisclosureRefused, match="single"):
        summarise(scenario, strict, audience="buyer")
    claim = verify(summarise(scenario, strict, audience="auditor").bundle, scenario, strict)
    assert claim.sites == ("MINE-01",)


def test_a_wrong_ledger_key_is_refused(typical: tuple[LotScenario, SummaryResult]) -> None:
    from custody.keys import LedgerKeyPair

    _scenario, result = typical
    other = LedgerKeyPair.generate("impostor").public
    with pytest.raises(ProofError, match="log checkpoint signature"):
        verify_bundle(result.bundle, other, _scenario.authority)


# --- the command line --------------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120,
        check=False, env=env,
    )  # fmt: skip


def test_ledger_summary_and_custody_verify_commands(tmp_path: Path) -> None:
    scenario = build_lot(tmp_path, sites=2, checkpoints_per_site=12, bags_per_site=2)
    out = tmp_path / "bundle.cbor"
    made = run("-m", "ledger.cli", "--data-dir", str(scenario.ledger_dir), "summary",
               "--lot", scenario.lot, "--out", str(out), "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["balance_checks"] == 24
    key = scenario.ledger_dir / "ledger-public.json"
    authority = str(scenario.authority_dir / "authority-public.json")
    ok = run("-m", "ledger.verify.cli", str(out), "--ledger-key", str(key), "--registry-key",
             authority)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ACCEPTED: lot LOT-2026-0042")
    as_json = json.loads(run("-m", "ledger.verify.cli", str(out), "--ledger-key", str(key),
                             "--registry-key", authority, "--json").stdout)  # fmt: skip
    assert as_json["accepted"] is True and as_json["total_kg"] == scenario.total / 10
    bad = bytearray(out.read_bytes())
    bad[-100] ^= 0x10
    (tmp_path / "bad.cbor").write_bytes(bytes(bad))
    rejected = run("-m", "ledger.verify.cli", str(tmp_path / "bad.cbor"), "--ledger-key", str(key),
                   "--registry-key", authority)  # fmt: skip
    assert rejected.returncode == 1 and rejected.stdout.startswith("REJECTED: ")
    # Nothing pinned (an empty home, no trust file named): a usage error, not a verdict.
    (tmp_path / "home").mkdir()
    unset = {"XDG_CONFIG_HOME", "CUSTODY_TRUST_FILE"}
    bare = {k: v for k, v in os.environ.items() if k not in unset}
    bare["HOME"] = str(tmp_path / "home")
    missing = run("-m", "ledger.verify.cli", str(out), env=bare)
    assert missing.returncode == 2 and "no ledger key is pinned" in missing.stderr
    no_authority = run("-m", "ledger.verify.cli", str(out), "--ledger-key", str(key), env=bare)
    assert no_authority.returncode == 2 and "no registry authority is pinned" in no_authority.stderr


def test_the_verifier_runs_with_only_custody_and_ledger_verify(tmp_path: Path) -> None:
    """Import guard: the verifier process never imports agent, sync, lab or the ledger service."""
    scenario = build_lot(tmp_path, sites=1, checkpoints_per_site=2, bags_per_site=1)
    out = tmp_path / "b.cbor"
    out.write_bytes(summarise(scenario).bundle)
    key = scenario.ledger_dir / "ledger-public.json"
    authority = scenario.authority_dir / "authority-public.json"
    code = (
        "import sys\n"
        "from ledger.verify.cli import main\n"
        "rc = main([sys.argv[1], '--ledger-key', sys.argv[2], '--registry-key', sys.argv[3]])\n"
        "ours = {m.split('.')[0] for m in sys.modules} & {'agent', 'sync', 'lab', 'bench'}\n"
        "extra = {m for m in sys.modules\n"
        "         if m.startswith('ledger.') and not m.startswith('ledger.verify')}\n"
        "assert not ours and not extra, (ours, extra)\n"
        "sys.exit(rc)\n"
    )
    done = run("-c", code, str(out), str(key), str(authority))
    assert done.returncode == 0, done.stdout + done.stderr
