"""The decision log's database plumbing: engines (SQLite tuned for several writers, any other URL),
table creation that survives replicas racing on a new database, and conflict-free inserts."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def engine_for(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    memory = parsed.database in (None, "", ":memory:")
    if memory:
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    else:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN below
        if not memory:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # take the write lock up front: another replica's writer then waits (busy timeout)
        # instead of failing a read-then-write transaction
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_tables(engine: Engine, metadata: sa.MetaData) -> None:
    """Create the tables if missing; replicas starting together on a new database race to create them
    (PostgreSQL then refuses all but one), so a refused attempt is retried once the winner is done."""
    for attempt in range(5):
        try:
            metadata.create_all(engine)
            return
        except sa.exc.DBAPIError:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def insert_new(conn: Connection, table: sa.Table, key: str, rows: list[dict[str, Any]]) -> set[Any]:
    """Insert ``rows`` whose ``key`` is not in ``table`` yet (another writer may have added it since we
    looked); return the keys inserted. PostgreSQL and SQLite skip a conflict in the database
    (``ON CONFLICT DO NOTHING``); elsewhere each row is tried in a savepoint."""
    if not rows:
        return set()
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        statement = insert.on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
        return set(conn.execute(statement, rows).scalars())  # one round trip (insertmanyvalues)
    inserted = set()
    for row in rows:
        try:
            with conn.begin_nested():
                conn.execute(table.insert(), [row])
            inserted.add(row[key])
        except sa.exc.IntegrityError:
            pass
    return inserted
