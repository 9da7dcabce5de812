"""Shared fixtures: throwaway ledger keys and initialised gateway data dirs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import enrol
from agent.recorder import Recorder
from custody.keys import LedgerKeyPair
from ledger.keys import PUBLIC_FILE, create_ledger_keys


@dataclass(frozen=True)
class Gateway:
    data_dir: Path
    ledger: LedgerKeyPair
    device_id: str = "gw-kol-01"
    site_id: str = "KOL-01"

    def recorder(self) -> Recorder:
        return Recorder(self.data_dir)


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    create_ledger_keys(path, "test-ledger")
    return path


@pytest.fixture
def gateway(tmp_path: Path, ledger_dir: Path) -> Gateway:
    from ledger.keys import load_ledger_keypair

    data_dir = tmp_path / "gw"
    enrol.initialise(
        data_dir, site_id="KOL-01", device_id="gw-kol-01", ledger_key_file=ledger_dir / PUBLIC_FILE
    )
    return Gateway(data_dir, load_ledger_keypair(ledger_dir))


@pytest.fixture
def recorder(gateway: Gateway) -> Iterator[Recorder]:
    rec = gateway.recorder()
    yield rec
    rec.close()


# --- MQTT broker fixtures ---
# Real Mosquitto with the production config and ACL (deploy/mosquitto/), on free loopback ports.
# The library is tests/brokers.py; tests/test_broker_acl.py shows how clients use these.

from tests.brokers import MosquittoBroker, TestPKI  # noqa: E402


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """CA, broker, ledger and device certificates (deploy/pki/make-test-pki.sh), once per session.

    ``test_pki.device(device_id)`` issues a device certificate on first use.
    """
    return TestPKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path, test_pki: TestPKI) -> Iterator[MosquittoBroker]:
    """A private Mosquitto: ``tls_port`` (client certs + ACL) and ``plain_port`` (anonymous)."""
    with MosquittoBroker(tmp_path / "mosquitto", test_pki) as running:
        yield running


# --- PostgreSQL fixtures ---
# A throwaway cluster (initdb + pg_ctl on a free loopback port, run as user postgres when we are
# root) or the server in $CUSTODY_TEST_PG_DSN; never the system PostgreSQL. The library is
# tests/postgres.py; tests/test_store_pg.py shows how stores use these.

from tests.postgres import PostgresServer, postgres_server  # noqa: E402


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server for this session, started on first use."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test, as a ``postgresql://`` URL; dropped afterwards."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)
