"""Database engines: a SQLite file (the embedded default) or PostgreSQL, by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine


def make_engine(url: str, *, pre_ping: bool = True) -> Engine:
    """pre_ping: test each connection taken from the pool with a round trip (PostgreSQL), so that
    one the server dropped is replaced before it is used; a hot path may rather retry."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers (Watch, List) go on while the event writer commits.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # SQLAlchemy, not the sqlite3 module, says where transactions begin: the module's own
            # implicit BEGIN comes only before DML, which breaks SAVEPOINT (its RELEASE would commit).
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=10, max_overflow=20)
