"""The provider state machine and the sweep guards, as pure functions.

::

               new cycle (cursor = None, attempts = 0)
                    |
                    v
      +------> [INGEST] --burst: pages until burst_length elapsed or done--+
      |             |                               |                      |
      |   not done: wait burst_interval     error: see "failures"        done
      |             |                                                      |
      +-------------+                          provider checks removals?   |
                                                 yes: [CHECK] bursts ask the source about
                                                      the removal candidates, in batches
                                                 no, or checks done:       |
                                                                           v
                                                                   sweep (guarded)
                                                                           |
                                                                  [REST] rest_length
                                                                           |
                                                                       new cycle

Failures: a burst that raised waits the next step of the backoff list ([BACKOFF], then the
open cycle's phase goes on from its last committed page). A burst that committed something
before it failed *made progress*: the count starts again from the first step, so a source that
fails now and then still finishes its cycles. After a failure on the last step (no progress
through the whole backoff list) the cycle is cancelled and a new one begins. A burst whose
worker vanished (its lease expired) and that had made progress is retried at once. A burst
whose source asks to wait (``RetryAfter``) or whose database went away repeats its step after
the wait, its attempts unchanged. A source that refuses for good (``SourceRefused``) *parks*
the provider ([PARKED]) until an operator starts it.

An operator may also *trigger* (the due step runs now; a parked provider begins a new cycle),
*start* (close the open cycle as cancelled and begin a new one now) and *cancel* (close the
open cycle and rest).

Every function here takes the current schedule and the database's ``now`` and returns a
:class:`Transition`; the store applies it with a guarded update.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ingestion.options import ProviderOptions


class Action(StrEnum):
    """What a provider does when its ``due_at`` comes: the one vocabulary of the schedule."""

    INGEST = "ingest"  # run the next burst of the open cycle
    CHECK = "check"  # the source is read; ask it about the removal candidates, then sweep
    BACKOFF = "backoff"  # retry the open cycle's phase after a failed burst
    REST = "rest"  # no open cycle; a new one begins when due
    PARKED = "parked"  # the source refused for good; nothing runs until an operator starts it


class Phase(StrEnum):
    """What the bursts of an open cycle do."""

    INGEST = "ingest"  # read the source page by page
    CHECK = "check"  # ask the source about the entities the sweep would remove


class CycleStatus(StrEnum):
    """Where one ingestion cycle stands."""

    RUNNING = "running"  # bursts are reading the source
    COMPLETED = "completed"  # the source was read to the end and swept
    CANCELLED = "cancelled"  # closed before the end; never swept


class BurstOutcome(StrEnum):
    """How one step ended; every value but ``SKIPPED`` is stored in the burst's row."""

    RUNNING = "running"  # claimed, not ended yet
    CONTINUED = "continued"  # ended at its burst_length; the cycle goes on after the interval
    DONE = "done"  # read the source to its end; the cycle was swept and completed
    WAITING = "waiting"  # the source asked to wait (a rate limit); no backoff step spent
    FAILED = "failed"  # raised; the provider backs off
    LOST = "lost"  # its worker vanished and the lease expired; counted as a failure
    INTERRUPTED = "interrupted"  # an operator step replaced it while it ran
    SKIPPED = "skipped"  # a stale, duplicate or early message: nothing ran, nothing stored

    @property
    def tally(self) -> str | None:
        """The counter a stored outcome adds to: completed, failed or interrupted."""
        return _TALLY.get(self)


_TALLY = {
    BurstOutcome.CONTINUED: "completed",
    BurstOutcome.DONE: "completed",
    BurstOutcome.WAITING: "completed",
    BurstOutcome.FAILED: "failed",
    BurstOutcome.LOST: "failed",
    BurstOutcome.INTERRUPTED: "interrupted",
}


def lease_held(owner: str | None, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a worker holds the provider at ``now``: a burst that may still commit."""
    return owner is not None and expires_at is not None and expires_at >= now


@dataclass(frozen=True)
class Schedule:
    """The provider's next step as stored in its row."""

    action: Action
    due_at: datetime
    attempts: int = 0

    @property
    def cycle_open(self) -> bool:
        return self.action not in (Action.REST, Action.PARKED)


@dataclass(frozen=True)
class Transition:
    """A new schedule, and what happens to the cycle on the way to it."""

    schedule: Schedule
    close_cycle: CycleStatus | None = None  # COMPLETED or CANCELLED
    open_cycle: bool = False


def begin_cycle(now: datetime) -> Transition:
    """A rest has ended (or a provider is new): open a cycle and burst at once."""
    return Transition(Schedule(Action.INGEST, now, 0), open_cycle=True)


def claim_step(current: Schedule, now: datetime, *, has_cycle: bool) -> Transition:
    """A worker claims the due step: the end of a rest opens a cycle, any other step runs in
    the open one. The ticket stays: the claim holds the step, it does not replace it."""
    if not current.cycle_open or not has_cycle:
        return begin_cycle(now)
    return Transition(current)


def reset(now: datetime) -> Transition:
    """The provider's records are forgotten: it rests, due now, so a new cycle begins."""
    return Transition(Schedule(Action.REST, now, 0))


def after_burst(
    done: bool, now: datetime, options: ProviderOptions, *, check_next: bool = False
) -> Transition:
    """A burst ended without error: the next burst; or, the source read to its end, the
    checking phase (``check_next``) or the sweep and the rest."""
    if done and check_next:
        return Transition(Schedule(Action.CHECK, now, 0))
    if done:
        return Transition(
            Schedule(Action.REST, now + options.rest_length, 0),
            close_cycle=CycleStatus.COMPLETED,
        )
    return Transition(Schedule(Action.INGEST, now + options.burst_interval, 0))


def after_check_burst(done: bool, now: datetime, options: ProviderOptions) -> Transition:
    """A burst of removal checks ended: more checks after the interval, or (every candidate
    asked) the sweep, the end of the cycle and the rest."""
    if done:
        return after_burst(True, now, options)
    return Transition(Schedule(Action.CHECK, now + options.burst_interval, 0))


def after_failure(
    current: Schedule, now: datetime, options: ProviderOptions, *, progressed: bool = False
) -> Transition:
    """A burst failed: wait the next backoff step, or after the last one start over.

    ``progressed``: the burst committed something first. Its failure then counts as the first
    of a new run of failures, so only a source that makes no progress through the whole
    backoff list gets its cycle cancelled.
    """
    attempts = 1 if progressed else current.attempts + 1
    if attempts <= len(options.backoff):
        return Transition(Schedule(Action.BACKOFF, now + options.backoff[attempts - 1], attempts))
    return Transition(
        Schedule(Action.INGEST, now, 0), close_cycle=CycleStatus.CANCELLED, open_cycle=True
    )


def after_lost_burst(
    current: Schedule, now: datetime, options: ProviderOptions, *, progressed: bool
) -> Transition:
    """A burst's worker vanished (its lease expired). One that had made progress is retried
    at once, its attempts unchanged: a killed worker is not the source's fault. One that had
    not counts as a failure, so a provider that kills its worker does not loop."""
    if progressed:
        return Transition(Schedule(Action.BACKOFF, now, current.attempts))
    return after_failure(current, now, options)


def after_rate_limit(current: Schedule, now: datetime, wait: timedelta) -> Transition:
    """The source asked to wait (a rate limit): the same step again after ``wait``.

    No attempt is counted and none is forgiven: a wait is not a failure.
    """
    action = Action.INGEST if not current.cycle_open else current.action
    return Transition(Schedule(action, now + max(wait, timedelta(0)), current.attempts))


def after_database_failure(current: Schedule, now: datetime, wait: timedelta) -> Transition:
    """The database went away mid-burst: once it is back, the same step again soon. Not the
    source's fault, so no attempt is counted."""
    return after_rate_limit(current, now, wait)


def park(now: datetime) -> Transition:
    """The source refused for good (``SourceRefused``): close the cycle and wait for an
    operator; the reconciler announces nothing for a parked provider."""
    return Transition(Schedule(Action.PARKED, now, 0), close_cycle=CycleStatus.CANCELLED)


def operator_trigger(current: Schedule, now: datetime) -> Transition:
    """Run the pending step now, whatever it is; a parked provider begins a new cycle."""
    if current.action is Action.PARKED:
        return begin_cycle(now)
    return Transition(replace(current, due_at=now))


def operator_start(current: Schedule, now: datetime) -> Transition:
    """End the rest or cancel the open cycle, and begin a new cycle now."""
    closing = CycleStatus.CANCELLED if current.cycle_open else None
    return Transition(Schedule(Action.INGEST, now, 0), close_cycle=closing, open_cycle=True)


def operator_cancel(current: Schedule, now: datetime, options: ProviderOptions) -> Transition:
    """Cancel the open cycle (no sweep) and rest; ``start`` begins a new one at any time.
    A resting or parked provider is left as it is."""
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
    # The cycle whose marks the held-back removals are measured against from now on: what a
    # later cycle must find still missing to remove. None when nothing is held back.
    blocked_cycle: int | None = None


def decide_sweep(
    *,
    owned: int,
    marked: int,
    fresh: int,
    confirmed: int,
    options: ProviderOptions,
    cycle: int | None = None,
    blocked_cycle: int | None = None,
) -> SweepDecision:
    """Apply the two sweep guards.

    ``owned`` entities belong to the provider, ``marked`` were seen in this cycle, ``fresh`` are
    missing for the first time, ``confirmed`` were held back by an earlier blocked sweep and are
    still missing. A cycle that marked nothing removes nothing when
    ``reject_empty_source_collections`` is set. Otherwise confirmed removals go, and fresh ones
    go unless they exceed ``reject_removals_above_percentage`` of what the provider owns.

    ``cycle`` is the cycle the removals are measured against (the completed one, or with
    ``remove_after_missed_cycles`` the oldest of the last completed cycles that must all have
    missed an entity) and ``blocked_cycle`` the one an earlier blocked sweep recorded; the
    decision says which cycle a block is measured against from now on. An empty cycle is no
    evidence of removal, so it keeps the earlier block as it was.

    With ``hold_removals_until_approved``, held-back removals are never applied by a later
    cycle: they wait for an operator to approve or dismiss them, while fresh removals within
    the guards still go.
    """
    hold = options.hold_removals_until_approved
    until = (
        "they stay until an operator approves or dismisses them (hold_removals_until_approved)"
        if hold
        else "a later cycle that finds them missing again removes them"
    )
    if marked == 0 and options.reject_empty_source_collections and fresh + confirmed > 0:
        return SweepDecision(
            False,
            False,
            f"the source returned no entities; {fresh + confirmed} removal(s) held back "
            "(reject_empty_source_collections)",
            blocked_cycle,
        )
    limit = options.reject_removals_above_percentage
    if limit is not None and owned > 0 and fresh > 0:
        share = 100.0 * fresh / owned
        if share > limit:
            return SweepDecision(
                confirmed > 0 and not hold,
                False,
                f"{fresh} of {owned} entities ({share:.1f}%) would be removed, above the "
                f"{limit:g}% limit (reject_removals_above_percentage); {until}",
                blocked_cycle if marked == 0 else cycle,
            )
    if hold and confirmed > 0:
        return SweepDecision(
            False,
            fresh > 0,
            f"{confirmed} removal(s) held back by an earlier guard; {until}",
            blocked_cycle,
        )
    return SweepDecision(confirmed > 0, fresh > 0, None)
