"""Open the ledger store a location names: a PostgreSQL URL or a SQLite file path.

``postgresql://...`` (or libpq's ``postgres://`` alias) opens a ``LedgerStore`` on
PostgreSQL, the scale-out store that several intake workers share (ARCHITECTURE.md
"Scale beyond one machine"); anything else is the path of a SQLite ledger file.
"""

from __future__ import annotations

from pathlib import Path

from custody.errors import StorageError
from ledger.store import LedgerStore, Store

__all__ = ["POSTGRES_SCHEMES", "is_postgres_url", "open_store"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.lower().startswith(POSTGRES_SCHEMES)


def open_store(url_or_path: str | Path) -> Store:
    """The store at ``url_or_path``; ``StorageError`` when it cannot be opened."""
    if is_postgres_url(url_or_path):
        try:
            # psycopg is the optional ``postgres`` extra: only the central side installs it.
            from ledger.dialect_pg import PostgresDialect
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] != "psycopg":
                raise
            raise StorageError(
                f"{_redacted(str(url_or_path))}: a PostgreSQL store needs psycopg, which this "
                "install lacks: install the postgres extra with pip install "
                "'cobalt-custody[postgres]', or deploy/install.sh --role ledger"
            ) from None

        return LedgerStore(PostgresDialect(str(url_or_path)))
    return LedgerStore(Path(url_or_path))


def _redacted(url: str) -> str:
    """The URL without its password, for an error message."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
