"""``custody-verify`` trusts only the ledger keys the buyer pinned, and says which one it used.

Real bundles from two real ledgers (lab.lots): A, the ledger the buyer trusts, and B, a seller's
own ledger that calls itself by the same name. Each bundle sits in the seller's folder with its
ledger's ledger-public.json beside it, as a seller would hand it over.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from custody.keys import LedgerKeyPair, kid_for
from lab.lots import build_lot
from ledger.keys import PUBLIC_FILE
from ledger.summary import build_summary
from ledger.verify.cli import main
from ledger.verify.trust import TRUST_FORMAT
from tests.support import REPO


@dataclass(frozen=True)
class Ledger:
    key_file: Path  # the ledger's own ledger-public.json
    bundle: Path  # in the seller's folder, with a copy of key_file beside it
    keys: LedgerKeyPair
    authority_file: Path  # the registry authority the ledger logs (authority-public.json)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.keys.public.signing_key).hexdigest()

    @property
    def kid(self) -> str:
        return kid_for(self.keys.public.signing_key).hex()


def _ledger(root: Path, seed: int) -> Ledger:
    scenario = build_lot(root, sites=2, checkpoints_per_site=2, bags_per_site=1, seed=seed)
    store = scenario.store()
    try:
        result = build_summary(store, scenario.keys, scenario.ledger_dir, scenario.lot)
    finally:
        store.close()
    seller = root / "from-seller"
    seller.mkdir()
    bundle = seller / "LOT-2026-0042.cbor"
    bundle.write_bytes(result.bundle)
    key_file = scenario.ledger_dir / PUBLIC_FILE
    (seller / PUBLIC_FILE).write_bytes(key_file.read_bytes())
    return Ledger(key_file, bundle, scenario.keys,
                  scenario.authority_dir / "authority-public.json")  # fmt: skip


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, Ledger]:
    a = _ledger(tmp_path_factory.mktemp("ledger-a"), seed=1)
    b = _ledger(tmp_path_factory.mktemp("ledger-b"), seed=2)
    AUTHORITY[:] = [a.authority_file]
    # The attack needs B to pass for A by name: same ledger id, another key.
    assert a.keys.ledger_id == b.keys.ledger_id and a.kid != b.kid
    return a, b


@pytest.fixture
def buyer(tmp_path: Path) -> dict[str, str]:
    """A buyer's environment with nothing pinned: an empty home, no trust file named."""
    home = tmp_path / "buyer-home"
    home.mkdir()
    unset = {"XDG_CONFIG_HOME", "CUSTODY_TRUST_FILE"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["HOME"] = str(home)
    return env


# Both test ledgers' registries are signed by ledger A's authority key file, named on every
# run: this module is about ledger keys (registry authorities: test_registry_authority.py).
AUTHORITY: list[Path] = []


def verify(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str
) -> tuple[int, str, str]:
    extra = ["--registry-key", str(AUTHORITY[0])] if AUTHORITY else []
    code = main([*argv, *extra], env=env)
    out = capsys.readouterr()
    return code, out.out, out.err


def user_file(env: dict[str, str]) -> Path:
    return Path(env["HOME"]) / ".config" / "custody" / "trusted-ledgers.json"


# --- nothing pinned ---------------------------------------------------------------------


def test_a_key_beside_the_bundle_is_not_trusted(
    ledgers: tuple[Ledger, Ledger], buyer: dict[str, str]
) -> None:
    """Run as a real process from inside the seller's folder: neither it nor the cwd count."""
    a, _ = ledgers
    done = subprocess.run(
        [sys.executable, "-m", "ledger.verify.cli", a.bundle.name],
        cwd=a.bundle.parent, env={**buyer, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ACCEPTED" not in done.stdout
    assert "no ledger key is pinned" in done.stderr
    assert "--ledger-key" in done.stderr and "custody-verify trust add" in done.stderr
    assert str(user_file(buyer)) in done.stderr
    assert "Traceback" not in done.stderr


# --- the seller's own ledger ------------------------------------------------------------


def test_a_bundle_from_another_ledger_of_the_same_name_is_refused(
    ledgers: tuple[Ledger, Ledger], buyer: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = ledgers
    # Pinned by --ledger-key: B's bundle, with B's key beside it, is checked against A only.
    code, out, _ = verify(capsys, buyer, str(b.bundle), "--ledger-key", str(a.key_file))
    assert code == 1 and out.startswith("REJECTED: ")
    assert "ACCEPTED" not in out
    assert f"ledger 'lab-ledger' (key id {b.kid})" in out  # what the bundle names
    assert f"key id {a.kid}" in out and str(a.key_file) in out  # what the buyer pinned
    assert "not made by the ledger you pinned" in out

    # Pinned in the per-user trust file: the same refusal, naming that file.
    assert main(["trust", "add", str(a.key_file)], env=buyer) == 0
    capsys.readouterr()
    code, out, _ = verify(capsys, buyer, str(b.bundle))
    assert code == 1 and out.startswith("REJECTED: ")
    assert f"key id {b.kid}" in out and str(user_file(buyer)) in out

    code, out, _ = verify(capsys, buyer, str(b.bundle), "--json")
    result = json.loads(out)
    assert code == 1 and result["accepted"] is False
    assert result["bundle_ledger"] == {"id": "lab-ledger", "kid": b.kid}
    assert result["ledger"] is None and "not made by the ledger you pinned" in result["failed"]


def test_a_ledger_that_is_not_pinned_is_refused_by_name(
    ledgers: tuple[Ledger, Ledger],
    buyer: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, _ = ledgers
    trust = tmp_path / "trust.json"
    other = LedgerKeyPair.generate("north-ledger").public
    trust.write_text(json.dumps({"format": TRUST_FORMAT, "ledgers": {
        "north-ledger": {"signing_key": other.signing_key.hex(),
                         "sealing_key": other.sealing_key.hex()},
    }}))  # fmt: skip
    code, out, _ = verify(capsys, buyer, str(a.bundle), "--trust", str(trust))
    assert code == 1 and out.startswith("REJECTED: ")
    assert f"ledger 'lab-ledger' (key id {a.kid}), which is not pinned in {trust}" in out
    assert "'north-ledger'" in out


def test_a_key_pinned_under_another_ledger_id_does_not_vouch_for_this_one(
    ledgers: tuple[Ledger, Ledger],
    buyer: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The claim names the pinned ledger id, so the signed log must carry that id too."""
    a, _ = ledgers
    trust = tmp_path / "trust.json"
    pub = a.keys.public
    trust.write_text(json.dumps({"format": TRUST_FORMAT, "ledgers": {
        "acme": {"signing_key": pub.signing_key.hex(), "sealing_key": pub.sealing_key.hex()},
    }}))  # fmt: skip
    code, out, _ = verify(capsys, buyer, str(a.bundle), "--trust", str(trust))
    assert code == 1
    assert "signed as ledger 'lab-ledger', but the pinned key is ledger 'acme'" in out
    checked = f"checked against ledger 'acme', signing key fingerprint (SHA-256) {a.fingerprint}"
    assert checked in out


# --- accepted: which ledger, which key, which file ------------------------------------------


def test_a_pinned_key_accepts_and_the_claim_names_ledger_fingerprint_and_file(
    ledgers: tuple[Ledger, Ledger], buyer: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = ledgers
    code, out, err = verify(capsys, buyer, str(a.bundle), "--ledger-key", str(a.key_file))
    assert code == 0, out + err
    accepted, signed, registry = out.splitlines()
    assert accepted.startswith("ACCEPTED: lot LOT-2026-0042: ")
    assert registry.startswith("  registry signed by registry authority 'lab-registry'")
    assert signed == (
        f"  signed by ledger 'lab-ledger', signing key fingerprint (SHA-256) {a.fingerprint}, "
        f"pinned in {a.key_file} (--ledger-key)"
    )
    code, out, _ = verify(capsys, buyer, str(a.bundle), "--ledger-key", str(a.key_file), "--json")
    result = json.loads(out)
    assert code == 0 and result["accepted"] is True and result["lot"] == "LOT-2026-0042"
    assert result["ledger"] == {
        "id": "lab-ledger", "key_fingerprint": a.fingerprint, "kid": a.kid,
        "key_file": str(a.key_file), "pinned_by": "--ledger-key",
    }  # fmt: skip


def test_the_per_user_trust_file_is_used_and_picks_the_bundles_ledger(
    ledgers: tuple[Ledger, Ledger],
    buyer: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, _ = ledgers
    # Another ledger pinned first: the bundle's is found among several, by its key.
    north = tmp_path / "north-public.json"
    north.write_text(LedgerKeyPair.generate("north-ledger").public.to_json())
    assert main(["trust", "add", str(north)], env=buyer) == 0
    assert main(["trust", "add", str(a.key_file)], env=buyer) == 0
    added = capsys.readouterr().out
    assert f"pinned ledger 'lab-ledger' in {user_file(buyer)}" in added
    assert a.fingerprint in added

    code, out, _ = verify(capsys, buyer, str(a.bundle), "--json")
    ledger = json.loads(out)["ledger"]
    assert code == 0
    assert ledger["id"] == "lab-ledger" and ledger["key_fingerprint"] == a.fingerprint
    assert ledger["key_file"] == str(user_file(buyer))
    assert ledger["pinned_by"] == "the per-user trust file"

    # XDG_CONFIG_HOME moves the per-user file; CUSTODY_TRUST_FILE overrides both.
    xdg = {**buyer, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert verify(capsys, xdg, str(a.bundle))[0] == 2  # nothing pinned there yet
    assert main(["trust", "add", str(a.key_file)], env=xdg) == 0
    assert (tmp_path / "xdg" / "custody" / "trusted-ledgers.json").is_file()
    code, out, _ = verify(capsys, xdg, str(a.bundle))
    assert code == 0 and f"pinned in {tmp_path / 'xdg' / 'custody'}" in out
    named = {**buyer, "CUSTODY_TRUST_FILE": str(tmp_path / "nowhere.json")}
    code, _, err = verify(capsys, named, str(a.bundle))
    assert code == 2 and f"{tmp_path / 'nowhere.json'}: (file): no such file" in err


# --- the trust file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not JSON"),
        ('{"ledgers": {}}', "format: not a trust file"),
        (json.dumps({"format": TRUST_FORMAT}), "ledgers: the fields are ledgers and, optionally"),
        (json.dumps({"format": TRUST_FORMAT, "ledgers": {"x": {"signing_key": "00"}}}),
         "ledgers.x: must hold signing_key and sealing_key"),
        (json.dumps({"format": TRUST_FORMAT, "ledgers": {"x": {
            "signing_key": "zz", "sealing_key": "11" * 32}}}), "ledgers.x: not a valid key"),
        (json.dumps({"format": TRUST_FORMAT, "ledgers": {"x": {
            "signing_key": "00" * 32, "sealing_key": "11" * 32}}}), "ledgers.x: not a valid key"),
        (json.dumps({"format": TRUST_FORMAT, "ledgers": {"x": {
            "ledger_id": "y", "signing_key": "00", "sealing_key": "11"}}}),
         "ledgers.x: holds the keys of ledger 'y'"),
    ],
)  # fmt: skip
def test_a_malformed_trust_file_is_a_plain_error_naming_the_file(
    ledgers: tuple[Ledger, Ledger],
    buyer: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    reason: str,
) -> None:
    a, _ = ledgers
    trust = tmp_path / "trust.json"
    trust.write_text(content)
    code, out, err = verify(capsys, buyer, str(a.bundle), "--trust", str(trust))
    assert code == 2 and out == ""
    assert err.startswith(f"custody-verify: {trust}: ") and reason in err, err
    # The per-user file is held to the same rules.
    user_file(buyer).parent.mkdir(parents=True)
    user_file(buyer).write_text(content)
    code, out, err = verify(capsys, buyer, str(a.bundle))
    assert code == 2 and err.startswith(f"custody-verify: {user_file(buyer)}: ") and reason in err


def test_a_trust_file_anyone_can_write_is_refused(
    ledgers: tuple[Ledger, Ledger],
    buyer: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, _ = ledgers
    trust = tmp_path / "trust.json"
    assert main(["trust", "add", str(a.key_file), "--trust", str(trust)], env=buyer) == 0
    trust.chmod(0o666)
    code, _, err = verify(capsys, buyer, str(a.bundle), "--trust", str(trust))
    assert code == 2 and f"{trust}: (file): writable by anyone" in err


def test_trust_add_list_remove(
    ledgers: tuple[Ledger, Ledger],
    buyer: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = ledgers
    trust = tmp_path / "pins" / "trust.json"
    t = ["--trust", str(trust)]
    assert main(["trust", "add", str(a.key_file), *t], env=buyer) == 0
    assert main(["trust", "add", str(a.key_file), *t], env=buyer) == 0  # again: no change
    assert "already pinned" in capsys.readouterr().out
    # B claims A's name with another key: refused unless the buyer says the key changed.
    code = main(["trust", "add", str(b.key_file), *t], env=buyer)
    err = capsys.readouterr().err
    assert code == 2 and "already pinned with another key" in err
    assert a.fingerprint in err and b.fingerprint in err and "--replace" in err
    assert main(["trust", "list", "--json", *t], env=buyer) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == {"trust_file": str(trust), "ledgers": [
        {"id": "lab-ledger", "key_fingerprint": a.fingerprint, "kid": a.kid}],
        "authorities": []}  # fmt: skip
    assert main(["trust", "add", str(b.key_file), "--replace", *t], env=buyer) == 0
    assert main(["trust", "list", *t], env=buyer) == 0
    assert b.fingerprint in capsys.readouterr().out
    assert main(["trust", "remove", "lab-ledger", *t], env=buyer) == 0
    assert main(["trust", "remove", "lab-ledger", *t], env=buyer) == 2
    assert "nothing is pinned there as 'lab-ledger'" in capsys.readouterr().err
    assert json.loads(trust.read_text()) == {"format": TRUST_FORMAT, "ledgers": {}}


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["trust", "--help"], ["trust", "add", "--help"], ["trust", "list", "--help"],
     ["trust", "remove", "--help"]],
)  # fmt: skip
def test_every_verify_command_has_help(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ledger.verify.cli", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "usage: custody-verify" in done.stdout
    assert "--trust" in done.stdout or argv == ["trust", "--help"]
