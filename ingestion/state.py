"""The provider state machine and the sweep guards, as pure functions.

::

               new cycle (cursor = None, attempts = 0)
                    |
                    v
      +------> [INGEST] --burst: pages until burst_length elapsed or done--+
      |             |                               |                      |
      |   not done: wait burst_interval     error: attempts += 1          done
      |             |                               |                      |
      +-------------+      attempts <= len(backoff): [BACKOFF]              v
                           wait backoff[attempts-1], then burst       sweep (guarded)
                           attempts > len(backoff): cycle cancelled,       |
                           no sweep, a new cycle begins now           [REST] rest_length
                                                                           |
                                                                       new cycle

A burst whose source asks to wait (``RetryAfter``, a rate limit) repeats its step after the
wait, its attempts unchanged.

An operator may also *trigger* (the due step runs now), *start* (close the open cycle as
cancelled and begin a new one now) and *cancel* (close the open cycle and rest).

Every function here takes the current schedule and the database's ``now`` and returns a
:class:`Transition`; the store applies it with a guarded update.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ingestion.provider import ProviderOptions


class Action(StrEnum):
    """What a provider does when its ``due_at`` comes."""

    INGEST = "ingest"  # run the next burst of the open cycle
    BACKOFF = "backoff"  # retry the open cycle after a failed burst
    REST = "rest"  # no open cycle; a new one begins when due


class CycleStatus(StrEnum):
    """Where one ingestion cycle stands."""

    RUNNING = "running"  # bursts are reading the source
    COMPLETED = "completed"  # the source was read to the end and swept
    CANCELLED = "cancelled"  # closed before the end; never swept


@dataclass(frozen=True)
class Schedule:
    """The provider's next step as stored in its row."""

    action: Action
    due_at: datetime
    attempts: int = 0

    @property
    def cycle_open(self) -> bool:
        return self.action is not Action.REST


@dataclass(frozen=True)
class Transition:
    """A new schedule, and what happens to the cycle on the way to it."""

    schedule: Schedule
    close_cycle: CycleStatus | None = None  # COMPLETED or CANCELLED
    open_cycle: bool = False


def begin_cycle(now: datetime) -> Transition:
    """A rest has ended (or a provider is new): open a cycle and burst at once."""
    return Transition(Schedule(Action.INGEST, now, 0), open_cycle=True)


def after_burst(done: bool, now: datetime, options: ProviderOptions) -> Transition:
    """A burst ended without error: the next burst, or (source exhausted) the rest."""
    if done:
        return Transition(
            Schedule(Action.REST, now + options.rest_length, 0),
            close_cycle=CycleStatus.COMPLETED,
        )
    return Transition(Schedule(Action.INGEST, now + options.burst_interval, 0))


def after_failure(current: Schedule, now: datetime, options: ProviderOptions) -> Transition:
    """A burst failed: wait the next backoff step, or after the last one start over."""
    attempts = current.attempts + 1
    if attempts <= len(options.backoff):
        return Transition(Schedule(Action.BACKOFF, now + options.backoff[attempts - 1], attempts))
    return Transition(
        Schedule(Action.INGEST, now, 0), close_cycle=CycleStatus.CANCELLED, open_cycle=True
    )


def after_rate_limit(current: Schedule, now: datetime, wait: timedelta) -> Transition:
    """The source asked to wait (a rate limit): the same step again after ``wait``.

    No attempt is counted and none is forgiven: a wait is not a failure.
    """
    action = Action.INGEST if current.action is Action.REST else current.action
    return Transition(Schedule(action, now + max(wait, timedelta(0)), current.attempts))


def operator_trigger(current: Schedule, now: datetime) -> Transition:
    """Run the pending step now, whatever it is."""
    return Transition(replace(current, due_at=now))


def operator_start(current: Schedule, now: datetime) -> Transition:
    """End the rest or cancel the open cycle, and begin a new cycle now."""
    closing = CycleStatus.CANCELLED if current.cycle_open else None
    return Transition(Schedule(Action.INGEST, now, 0), close_cycle=closing, open_cycle=True)


def operator_cancel(current: Schedule, now: datetime, options: ProviderOptions) -> Transition:
    """Cancel the open cycle (no sweep) and rest; ``start`` begins a new one at any time."""
    if not current.cycle_open:
        return Transition(current)
    return Transition(
        Schedule(Action.REST, now + options.rest_length, 0), close_cycle=CycleStatus.CANCELLED
    )


@dataclass(frozen=True)
class SweepDecision:
    """What a completed cycle removes, and why it holds back what it does not."""

    remove_confirmed: bool  # removals a blocked sweep held back and this cycle confirmed
    remove_fresh: bool  # entities first found missing in this cycle
    blocked_reason: str | None


def decide_sweep(
    *,
    owned: int,
    marked: int,
    fresh: int,
    confirmed: int,
    options: ProviderOptions,
) -> SweepDecision:
    """Apply the two sweep guards.

    ``owned`` entities belong to the provider, ``marked`` were seen in this cycle, ``fresh`` are
    missing for the first time, ``confirmed`` were held back by an earlier blocked sweep and are
    still missing. A cycle that marked nothing removes nothing when
    ``reject_empty_source_collections`` is set. Otherwise confirmed removals go, and fresh ones
    go unless they exceed ``reject_removals_above_percentage`` of what the provider owns.
    """
    if marked == 0 and options.reject_empty_source_collections and fresh + confirmed > 0:
        return SweepDecision(
            False,
            False,
            f"the source returned no entities; {fresh + confirmed} removal(s) held back "
            "(reject_empty_source_collections)",
        )
    limit = options.reject_removals_above_percentage
    if limit is not None and owned > 0 and fresh > 0:
        share = 100.0 * fresh / owned
        if share > limit:
            return SweepDecision(
                confirmed > 0,
                False,
                f"{fresh} of {owned} entities ({share:.1f}%) would be removed, above the "
                f"{limit:g}% limit (reject_removals_above_percentage); a later cycle that "
                "finds them missing again removes them",
            )
    return SweepDecision(confirmed > 0, fresh > 0, None)
