"""Value objects the store takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ingestion.entities import PreparedEntity
from ingestion.state import Action, Phase, Schedule


class ErrorKind(StrEnum):
    """What an error record is about."""

    ENTITY = "entity"  # one entity was rejected; the rest of its page committed
    WARNING = "warning"  # something was accepted with a caveat (a duplicate ref in a page)
    BURST = "burst"  # a burst failed; the provider backs off


@dataclass(frozen=True, slots=True)
class Problem:
    """An entity-level error or warning found while preparing a page."""

    entity: str  # the entity's name, or its position in the page
    rule: str
    message: str
    ref: str | None = None


@dataclass(frozen=True)
class Page:
    """One page ready to commit."""

    entities: list[PreparedEntity]
    cursor: str | None  # the next page's cursor, JSON-encoded
    done: bool
    rejected: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    # Locations the source could not read: what they held stays marked, not swept.
    kept_locations: list[str] = field(default_factory=list)
    # The provider's last applied event when the page's read began (None: the provider takes
    # no events): what a later event did to an entity is not undone by this page.
    events_seen: int | None = None


@dataclass(frozen=True)
class PageCommit:
    """What a committed page did to the catalog."""

    sequence: int
    written: int  # inserted or changed
    unchanged: int
    rejected: int


@dataclass(frozen=True)
class Doorbell:
    """A step recorded in the database, to be announced to the workers."""

    provider: str
    ticket: int
    action: Action
    cycle_id: int | None
    burst: int  # the number the next burst of the cycle will have
    countdown: float  # seconds from the database's now until the step is due


@dataclass(frozen=True)
class Claim:
    """A burst this worker now holds: resume the cycle at ``cursor``."""

    provider: str
    ticket: int
    owner: str
    cycle_id: int
    burst_id: int
    burst: int
    schedule: Schedule
    cursor: str | None
    next_sequence: int
    phase: Phase = Phase.INGEST
    check_after: str | None = None  # the checking phase resumes after this candidate


@dataclass(frozen=True)
class CheckBatch:
    """What a provider said about one batch of removal candidates, ready to commit."""

    candidates: list[str]  # the refs asked about, in ref order
    gone: set[str]  # confirmed gone: left unmarked, so the sweep removes them
    present: Page  # fresh entities for candidates still in the source


@dataclass(frozen=True)
class CheckCommit:
    """What a committed batch of removal checks did."""

    checked: int
    kept: int  # candidates marked again: present, or not confirmed gone
    gone: int
    written: int
    unchanged: int
    rejected: int


@dataclass(frozen=True)
class Skip:
    """A message that must not run: why, in a sentence for the log."""

    reason: str


@dataclass(frozen=True)
class LostBurst:
    """A burst whose worker vanished: recorded as a failure; ``doorbell`` is the next step."""

    reason: str
    doorbell: Doorbell


@dataclass(frozen=True)
class SweepResult:
    """What the sweep at the end of a cycle removed, or held back and why."""

    removed: int
    blocked: int
    blocked_reason: str | None


@dataclass(frozen=True)
class ProviderStatus:
    """Everything an operator wants to know about one provider."""

    name: str
    action: Action
    due_at: datetime
    attempts: int
    ticket: int
    running: bool
    lease_owner: str | None
    last_error: str | None
    last_error_at: datetime | None
    current_cycle: dict[str, Any] | None
    last_completed_cycle: dict[str, Any] | None
    blocked_sweep: dict[str, Any] | None
    waiting_removals: int = 0  # missing from the last cycle, kept by remove_after_missed_cycles
