"""The schema: one module, shared by the store and the Alembic migrations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONDocument(TypeDecorator[Any]):
    """A JSON document: ``jsonb`` on Postgres, text elsewhere.

    A ``str`` is taken as JSON text already encoded (the engine encodes each entity once, to hash
    it, and writes that text); anything else is encoded here.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(Text())

    def bind_processor(self, dialect: Dialect) -> Any:
        def process(value: Any) -> Any:
            if value is None or isinstance(value, str):
                return value
            return json.dumps(value, sort_keys=True, separators=(",", ":"))

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql" and not isinstance(self, JSONText):
            return value  # the driver decoded the jsonb: a str here is a JSON string
        return json.loads(value) if isinstance(value, str) else value


class JSONText(JSONDocument):
    """A JSON document kept as its text on every backend: written and read back whole, never
    queried inside, so Postgres need not parse it into ``jsonb``. The feed's ``entity`` was one
    until revision 0009; migration 0007 still creates it so."""

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(Text())


def _created() -> Column[datetime]:
    return Column("created_at", UTCDateTime(), nullable=False)


providers = Table(
    "ingestion_providers",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("action", String(16), nullable=False),  # state.Action
    # The reconciler reads the due steps by this index: an idle tick reads no row.
    Column("due_at", UTCDateTime(), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    # Bumped by every transition: a task message names the ticket it was sent for.
    Column("ticket", BigInteger, nullable=False, default=1),
    Column("cycle_id", BigInteger, nullable=True),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("sent_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_error_at", UTCDateTime(), nullable=True),
    # The completed cycle whose sweep was held back by the percentage guard, if any.
    Column("blocked_cycle_id", BigInteger, nullable=True),
    Column("blocked_reason", Text, nullable=True),
    Column("blocked_count", Integer, nullable=False, default=0),
    # The last event applied to this provider's entities; a page remembers the value it read.
    Column("last_event_id", BigInteger, nullable=True),
    _created(),
    Column("updated_at", UTCDateTime(), nullable=False),
)

cycles = Table(
    "ingestion_cycles",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("provider", String(255), nullable=False, index=True),
    Column("status", String(16), nullable=False),  # state.CycleStatus
    Column("phase", String(16), nullable=False, default="ingest"),  # state.Phase
    Column("cursor", Text, nullable=True),  # JSON of the next page's cursor
    # The checking phase: the last removal candidate asked about (candidates go in ref order),
    # how many were asked about, and how many of them the source still holds (kept).
    Column("check_after", String(512), nullable=True),
    Column("checked", Integer, nullable=False, default=0),
    Column("kept", Integer, nullable=False, default=0),
    Column("bursts", Integer, nullable=False, default=0),
    Column("pages", Integer, nullable=False, default=0),
    Column("entities", Integer, nullable=False, default=0),  # marked in this cycle
    Column("written", Integer, nullable=False, default=0),  # inserted or changed
    Column("unchanged", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
    Column("removed", Integer, nullable=False, default=0),
    Column("blocked", Integer, nullable=False, default=0),
    Column("blocked_reason", Text, nullable=True),
    # The provider's last applied event when the cycle began: older event touches do not
    # concern its pages.
    Column("events_at_start", BigInteger, nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime(), nullable=True),
)

# One row per committed page: the cursor after it, written in the page's transaction. A burst
# resumes from the last one. (An entity's own mark is ``catalog_entities.mark_cycle``.)
checkpoints = Table(
    "ingestion_checkpoints",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "cycle_id",
        BigInteger,
        ForeignKey("ingestion_cycles.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("sequence", Integer, nullable=False),
    Column("cursor", Text, nullable=True),  # JSON of the cursor after this page
    Column("entities", Integer, nullable=False),
    _created(),
    # A page is committed once: the database refuses a second commit of the same sequence.
    UniqueConstraint("cycle_id", "sequence", name="uq_ingestion_checkpoints_cycle_sequence"),
)

bursts = Table(
    "ingestion_bursts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("provider", String(255), nullable=False),
    Column("cycle_id", BigInteger, nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("ticket", BigInteger, nullable=False),
    Column("worker", String(255), nullable=False),
    Column("outcome", String(16), nullable=False),  # state.BurstOutcome
    Column("pages", Integer, nullable=False, default=0),
    Column("entities", Integer, nullable=False, default=0),  # marked
    Column("written", Integer, nullable=False, default=0),  # inserted or changed
    Column("unchanged", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
    Column("checked", Integer, nullable=False, default=0),  # removal candidates asked about
    Column("removed", Integer, nullable=False, default=0),  # by the sweep after this burst
    Column("error", Text, nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime(), nullable=True),
    # One burst per step: a duplicate message cannot start a second burst for the same ticket.
    UniqueConstraint("provider", "ticket", name="uq_ingestion_bursts_provider_ticket"),
)

errors = Table(
    "ingestion_errors",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("provider", String(255), nullable=False),
    Column("cycle_id", BigInteger, nullable=True),
    Column("page", Integer, nullable=True),
    Column("kind", String(16), nullable=False),  # entity, warning, burst
    Column("entity", Text, nullable=True),  # the entity's name or position in its page
    Column("ref", Text, nullable=True),
    Column("rule", String(64), nullable=True),
    Column("message", Text, nullable=False),
    _created(),
    Index("ix_ingestion_errors_provider_id", "provider", "id"),
)

# What the engine knows of each entity but its body: who owns it, its hash, its mark. Narrow,
# so that marking an unchanged entity writes a new version of ~150 bytes (a heap-only update:
# fillfactor 50 on Postgres, no index on the mark), never of the body (``bodies``).
entities = Table(
    "catalog_entities",
    metadata,
    Column("ref", String(512), primary_key=True),
    Column("provider", String(255), nullable=False),
    Column("location_key", Text, nullable=True),
    Column("hash", String(64), nullable=False),
    # The canonical encoding ``hash`` was computed with (ingestion.entities.CANONICAL_VERSION).
    Column("hash_version", SmallInteger, nullable=False, server_default="1"),
    # The last cycle that saw this entity: the sweep removes what the completed cycle did not.
    Column("mark_cycle", BigInteger, nullable=False),
    _created(),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_catalog_entities_provider_ref", "provider", "ref"),
)

# Each entity's body, one row per ``catalog_entities`` row with the same ref: written when the
# entity is added or changed, deleted with it, and untouched by the marks of unchanged cycles.
# (No foreign key: its per-row checks would lock the entity row on every insert.)
bodies = Table(
    "catalog_bodies",
    metadata,
    Column("ref", String(512), primary_key=True),
    Column("entity", JSONDocument(), nullable=False),
)

# Each catalog row with its body: what every read of a body selects from.
entities_with_bodies = entities.join(bodies, bodies.c.ref == entities.c.ref)

# The change feed: every change the engine makes to the catalog, written in the transaction
# that makes it. Ids are assigned in commit order (see ingestion.store.changes), so a consumer
# that has read up to an id never sees a lower one commit later.
changes = Table(
    "catalog_changes",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("ref", String(512), nullable=False),
    Column("kind", String(8), nullable=False),  # changes.ChangeKind
    Column("provider", String(255), nullable=False),
    Column("source", String(8), nullable=False),  # changes.ChangeSource: page, sweep, event...
    Column("cycle_id", BigInteger, nullable=True),
    Column("event_id", BigInteger, nullable=True),
    # The entity as written (added, changed); none for a removal. On Postgres a jsonb copied
    # from the body the same transaction wrote, where it can be (see changes.PostgresFeedWriter).
    Column("entity", JSONDocument(), nullable=True),
    _created(),
    Index("ix_catalog_changes_created_at", "created_at"),
    # SQLite would hand out a pruned id again once the table is empty: never.
    sqlite_autoincrement=True,
)

# Events accepted from sources, stored before they are acknowledged; applied in id order.
events = Table(
    "ingestion_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("topic", String(255), nullable=False),
    # A redelivery carries the same id (per topic): the database refuses to store it twice.
    Column("delivery_id", String(255), nullable=False),
    Column("payload", JSONDocument(), nullable=False),
    Column("headers", JSONDocument(), nullable=False),  # credentials removed
    Column("status", String(16), nullable=False),  # pending, applied
    Column("result", JSONDocument(), nullable=True),  # per provider: what it did
    Column("received_at", UTCDateTime(), nullable=False),
    Column("applied_at", UTCDateTime(), nullable=True),
    Index("ix_ingestion_events_status_id", "status", "id"),
    UniqueConstraint("topic", "delivery_id", name="uq_ingestion_events_topic_delivery"),
    sqlite_autoincrement=True,
)

# What events last did to a provider's entities: a page read before that event must not undo
# it. Pruned when a cycle completes (its pages were all read after older events).
event_touches = Table(
    "ingestion_event_touches",
    metadata,
    Column("provider", String(255), primary_key=True),
    Column("ref", String(512), primary_key=True),
    Column("event_id", BigInteger, nullable=False),
)

# Named leases held by one worker at a time (the event applier), portable across databases.
locks = Table(
    "ingestion_locks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(255), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=True),
)

__all__ = [
    "JSONDocument",
    "JSONText",
    "UTCDateTime",
    "bodies",
    "bursts",
    "changes",
    "checkpoints",
    "cycles",
    "entities",
    "entities_with_bodies",
    "errors",
    "event_touches",
    "events",
    "locks",
    "metadata",
    "providers",
]
