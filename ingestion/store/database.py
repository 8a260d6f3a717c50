"""Database set-up: the SQLAlchemy engine for Postgres or SQLite, transactions, the clock.

Everything here is about reaching the database; what the engine stores is in the other
modules of this package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from ingestion.errors import DatabaseUnavailable
from ingestion.store.changes import Batch, FeedWriter, feed_writer_for, merged
from ingestion.store.dialects import DialectSQL, dialect_sql_for

log = logging.getLogger("ingestion.store")


def _connect_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Own the transactions (pysqlite's implicit ones cannot BEGIN IMMEDIATE) and let writers
    # from several processes queue behind each other instead of failing.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_sqlite(conn: Connection) -> None:
    # A writing transaction takes the write lock at BEGIN: a read-then-write transaction can
    # then never fail with SQLITE_BUSY halfway. Reads begin deferred and do not queue.
    if conn.get_execution_options().get("ingestion_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


#: How long Postgres lets a session sit idle inside a transaction before it ends the session.
#: The engine's transactions never wait on anything but the database between statements, so a
#: session idle this long belongs to a worker that is frozen (SIGSTOP, a paused VM) or wedged;
#: ending it frees the row locks it holds, which would otherwise keep every other worker from
#: taking its provider over. The app passes its lease: such a worker has lost its lease anyway.
IDLE_IN_TRANSACTION_SECONDS = 10.0


def create_sql_engine(
    url: str, *, idle_in_transaction: float | None = IDLE_IN_TRANSACTION_SECONDS
) -> sqlalchemy.Engine:
    """A SQLAlchemy engine set up for the ingestion's access pattern on Postgres or SQLite.

    ``idle_in_transaction`` (seconds, Postgres): see :data:`IDLE_IN_TRANSACTION_SECONDS`;
    ``None`` leaves the server's setting.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        event.listen(engine, "connect", _connect_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    if parsed.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {}
        if idle_in_transaction is not None:
            given = parsed.query.get("options")
            options = [given] if isinstance(given, str) else list(given or ())
            milliseconds = max(1, round(idle_in_transaction * 1000))
            options.append(f"-c idle_in_transaction_session_timeout={milliseconds}")
            connect_args["options"] = " ".join(options)
        return sqlalchemy.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=4,
            executemany_mode="values_plus_batch",
            connect_args=connect_args,
        )
    return sqlalchemy.create_engine(url, pool_pre_ping=True)


@contextmanager
def _unavailable() -> Iterator[None]:
    """Turn a lost or refused connection into :class:`DatabaseUnavailable`."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"the database did not answer: {_first_line(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(
                f"the database connection was lost: {_first_line(exc)}"
            ) from exc
        raise


def _first_line(exc: DBAPIError) -> str:
    origin = exc.orig if exc.orig is not None else exc
    text = str(origin).strip().split("\n", 1)[0]
    return (text or type(origin).__name__)[:300]


@dataclass
class Tx:
    """An open writing transaction and the database's time when it began.

    ``sql`` and ``feed`` are the database's own statements (chosen once, see
    :class:`Database`). ``changes`` collects what the transaction does to the catalog (see
    :mod:`ingestion.store.changes`); they are written to the change feed as its last statement.
    """

    conn: Connection
    now: datetime
    sql: DialectSQL
    feed: FeedWriter
    changes: list[dict[str, Any]] = field(default_factory=list)
    # Batches already written to the feed by set-based statements (FeedWriter.remove_where).
    recorded: list[Batch] = field(default_factory=list)


class Database:
    """The database the ingestion keeps its state and catalog in.

    What its statements say differently on Postgres and SQLite is chosen here, once:
    :attr:`sql` (:mod:`ingestion.store.dialects`) and the change feed's writer :attr:`feed`.
    """

    def __init__(
        self,
        url: str,
        *,
        sql_engine: sqlalchemy.Engine | None = None,
        idle_in_transaction: float | None = IDLE_IN_TRANSACTION_SECONDS,
    ) -> None:
        self.url = url
        self.sql_engine = sql_engine or create_sql_engine(
            url, idle_in_transaction=idle_in_transaction
        )
        self.dialect: str = self.sql_engine.dialect.name
        self.sql = dialect_sql_for(self.dialect)
        self.feed = feed_writer_for(self.dialect)
        # Called with each committed batch of changes (see ingestion.store.changes.Batch).
        self.change_listeners: list[Callable[[Batch], None]] = []

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A writing transaction (on SQLite it holds the write lock from its start).

        A database that cannot be reached, or that drops the connection, raises
        :class:`~ingestion.errors.DatabaseUnavailable`; nothing of the transaction commits.
        """
        with _unavailable(), self.sql_engine.connect() as conn:
            conn.execution_options(ingestion_write=True)
            with conn.begin():
                tx = Tx(conn, self.now(conn), self.sql, self.feed)
                yield tx
                if tx.changes:
                    tx.recorded.append(self.feed.record(tx))
        batch = merged(tx.recorded)
        if batch is not None:
            for listener in self.change_listeners:
                try:
                    listener(batch)
                except Exception:  # the changes committed; a listener cannot undo them
                    log.exception("a listener of the change feed failed on %s", batch)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A reading transaction."""
        with _unavailable(), self.sql_engine.connect() as conn, conn.begin():
            yield conn

    def now(self, conn: Connection) -> datetime:
        """The database's clock (``clock_timestamp()`` on Postgres, this machine's with
        SQLite): every decision about what is due uses it."""
        return self.sql.now(conn)

    def insert(self, table: Any) -> Any:
        """An ``INSERT`` that knows the database's ``ON CONFLICT``."""
        return self.sql.insert(table)

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with Alembic."""
        from ingestion.store.migrate import upgrade

        upgrade(self.sql_engine, revision)

    def dispose(self, *, close: bool = True) -> None:
        """Drop pooled connections (``close=False`` in a forked child: leave the parent's)."""
        self.sql_engine.dispose(close=close)
