"""What the store's statements say differently on Postgres and on SQLite, in one place.

The other modules of the store write each statement once and ask the database's
:class:`DialectSQL` for the parts that differ: the clock, ``ON CONFLICT``, a list of names as a
parameter, transaction locks, the database's start time and durations in seconds. It is chosen
once, when the :class:`~ingestion.store.database.Database` is made, and every writing
transaction carries it (:attr:`Tx.sql <ingestion.store.database.Tx.sql>`).

Row locks need nothing here: SQLAlchemy renders ``FOR UPDATE`` on Postgres and leaves it out on
SQLite, whose writing transactions hold the whole database already.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    any_,
    bindparam,
    func,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite


class DialectSQL:
    """The parts of a statement that differ between databases; a subclass per database."""

    def now(self, conn: Connection) -> datetime:
        """The database's clock: every decision about what is due uses it."""
        raise NotImplementedError

    def insert(self, table: Any) -> Any:
        """An ``INSERT`` that knows the database's ``ON CONFLICT``."""
        raise NotImplementedError

    def name_in(self, column: ColumnElement[str], names: list[str]) -> ColumnElement[bool]:
        """``column`` is one of ``names``."""
        raise NotImplementedError

    def serialise(self, conn: Connection, key: int) -> None:
        """Hold the transaction lock ``key`` until the transaction ends: the writers that take
        it commit one after the other."""
        raise NotImplementedError

    def up_since(self, moment: datetime) -> ColumnElement[bool]:
        """The database has been running since ``moment`` (a condition of a statement)."""
        raise NotImplementedError

    def restarted_within(self, conn: Connection, now: datetime, period: timedelta) -> bool:
        """Whether the database started less than ``period`` before ``now``."""
        raise NotImplementedError

    def seconds(self, start: Any, end: Any) -> ColumnElement[Any]:
        """The seconds from timestamp ``start`` to timestamp ``end``."""
        raise NotImplementedError


# Read at the start of every writing transaction: built once.
_CLOCK = select(func.clock_timestamp())


class PostgresSQL(DialectSQL):
    """Postgres: a server with its own clock, arrays and advisory locks."""

    def now(self, conn: Connection) -> datetime:
        value = conn.execute(_CLOCK).scalar_one()
        assert isinstance(value, datetime)
        return value.astimezone(UTC)

    def insert(self, table: Any) -> Any:
        return postgresql.insert(table)

    def name_in(self, column: ColumnElement[str], names: list[str]) -> ColumnElement[bool]:
        # One array parameter, not one parameter per name.
        return column == any_(bindparam("names", names, type_=postgresql.ARRAY(String)))

    def serialise(self, conn: Connection, key: int) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(key)))

    def up_since(self, moment: datetime) -> ColumnElement[bool]:
        return func.pg_postmaster_start_time() <= moment

    def restarted_within(self, conn: Connection, now: datetime, period: timedelta) -> bool:
        started = conn.execute(select(func.pg_postmaster_start_time())).scalar_one()
        return bool(started > now - period)

    def seconds(self, start: Any, end: Any) -> ColumnElement[Any]:
        return func.extract("epoch", end - start)


# A page's columns travel to Postgres as arrays. psycopg2 sends a Python list as an ARRAY[...]
# constructor of one quoted constant per item, which the client quotes one by one and the
# server parses as a page of expressions (about 1.8 ms for a page's refs and hashes). One
# array literal, '{"a","b"}', is one constant the server reads at once (about 1.0 ms).
def text_array(values: Sequence[str | None]) -> str:
    """``values`` as a Postgres array literal for ``CAST(:param AS text[])``; ``None`` is
    ``NULL``. Every item is quoted, so that no value (``NULL``, one with a comma or a space)
    is read as anything but itself."""
    if not values:
        return "{}"
    if None not in values:
        strings = cast("Sequence[str]", values)
        together = "".join(strings)
        if '"' not in together and "\\" not in together:  # nothing to escape: the common page
            return '{"' + '","'.join(strings) + '"}'
    return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"


def bigint_array(values: Sequence[int | None]) -> str:
    """``values`` as a Postgres array literal for ``CAST(:param AS bigint[])``."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SQLiteSQL(DialectSQL):
    """SQLite: embedded in this process, one writer at a time."""

    def now(self, conn: Connection) -> datetime:
        # SQLite is embedded: its clock is this machine's.
        return datetime.now(UTC)

    def insert(self, table: Any) -> Any:
        return sqlite.insert(table)

    def name_in(self, column: ColumnElement[str], names: list[str]) -> ColumnElement[bool]:
        return column.in_(names)

    def serialise(self, conn: Connection, key: int) -> None:
        # A writing transaction holds the write lock from its BEGIN IMMEDIATE.
        return None

    def up_since(self, moment: datetime) -> ColumnElement[bool]:
        # Embedded: the database runs whenever this process does.
        return true()

    def restarted_within(self, conn: Connection, now: datetime, period: timedelta) -> bool:
        return False

    def seconds(self, start: Any, end: Any) -> ColumnElement[Any]:
        # SQLite keeps UTC timestamps as text; julianday() reads them, in days.
        return (func.julianday(end) - func.julianday(start)) * 86400.0


def dialect_sql_for(dialect: str) -> DialectSQL:
    """The statements' parts for the database named ``dialect`` (SQLAlchemy's name)."""
    if dialect == "postgresql":
        return PostgresSQL()
    return SQLiteSQL()
