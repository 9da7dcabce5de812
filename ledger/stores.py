"""Open the ledger store a location names: a PostgreSQL URL or a SQLite file path.

``postgresql://...`` (or libpq's ``postgres://`` alias) opens a ``LedgerStore`` on
PostgreSQL, the scale-out store that several intake workers share (ARCHITECTURE.md
"Scale beyond one machine"); anything else is the path of a SQLite ledger file.
"""

from __future__ import annotations

from pathlib import Path

from ledger.store import LedgerStore, Store

__all__ = ["POSTGRES_SCHEMES", "is_postgres_url", "open_store"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.lower().startswith(POSTGRES_SCHEMES)


def open_store(url_or_path: str | Path) -> Store:
    """The store at ``url_or_path``; ``StorageError`` when it cannot be opened."""
    if is_postgres_url(url_or_path):
        from ledger.dialect_pg import PostgresDialect  # psycopg only when asked for

        return LedgerStore(PostgresDialect(str(url_or_path)))
    return LedgerStore(Path(url_or_path))
