"""The state machine and the sweep guards, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingestion.options import ProviderOptions
from ingestion.state import (
    Action,
    BurstOutcome,
    CycleStatus,
    Schedule,
    after_burst,
    after_failure,
    begin_cycle,
    claim_step,
    decide_sweep,
    lease_held,
    operator_cancel,
    operator_start,
    operator_trigger,
    reset,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OPTIONS = ProviderOptions.build(
    "p",
    {
        "burst_interval": timedelta(seconds=3),
        "rest_length": timedelta(days=1),
        "backoff": [timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=10)],
    },
)


def test_a_new_cycle_bursts_at_once() -> None:
    t = begin_cycle(NOW)
    assert t.schedule == Schedule(Action.INGEST, NOW, 0)
    assert t.open_cycle and t.close_cycle is None


def test_a_burst_that_is_not_done_waits_the_burst_interval() -> None:
    t = after_burst(False, NOW, OPTIONS)
    assert t.schedule == Schedule(Action.INGEST, NOW + timedelta(seconds=3), 0)
    assert t.close_cycle is None and not t.open_cycle


def test_a_done_burst_completes_the_cycle_and_rests() -> None:
    t = after_burst(True, NOW, OPTIONS)
    assert t.schedule == Schedule(Action.REST, NOW + timedelta(days=1), 0)
    assert t.close_cycle is CycleStatus.COMPLETED and not t.open_cycle


def test_failures_walk_the_backoff_list_then_cancel_and_start_over() -> None:
    current = Schedule(Action.INGEST, NOW, 0)
    delays = []
    for _ in OPTIONS.backoff:
        t = after_failure(current, NOW, OPTIONS)
        assert t.close_cycle is None and not t.open_cycle
        assert t.schedule.action is Action.BACKOFF
        delays.append(t.schedule.due_at - NOW)
        current = t.schedule
    assert delays == list(OPTIONS.backoff)
    assert current.attempts == len(OPTIONS.backoff)
    last = after_failure(current, NOW, OPTIONS)
    assert last.close_cycle is CycleStatus.CANCELLED
    assert last.open_cycle
    assert last.schedule == Schedule(Action.INGEST, NOW, 0)


def test_a_success_after_backoff_resets_the_attempts() -> None:
    t = after_burst(False, NOW, OPTIONS)
    assert t.schedule.attempts == 0


def test_trigger_keeps_the_step_and_makes_it_due_now() -> None:
    later = Schedule(Action.BACKOFF, NOW + timedelta(hours=1), 2)
    assert operator_trigger(later, NOW).schedule == Schedule(Action.BACKOFF, NOW, 2)


@pytest.mark.parametrize("action", [Action.INGEST, Action.BACKOFF])
def test_start_during_a_cycle_cancels_it_and_opens_a_new_one(action: Action) -> None:
    t = operator_start(Schedule(action, NOW + timedelta(minutes=1), 1), NOW)
    assert t.close_cycle is CycleStatus.CANCELLED and t.open_cycle
    assert t.schedule == Schedule(Action.INGEST, NOW, 0)


def test_start_during_a_rest_ends_the_rest() -> None:
    t = operator_start(Schedule(Action.REST, NOW + timedelta(days=1), 0), NOW)
    assert t.close_cycle is None and t.open_cycle
    assert t.schedule == Schedule(Action.INGEST, NOW, 0)


def test_cancel_closes_the_cycle_without_sweeping_and_rests() -> None:
    t = operator_cancel(Schedule(Action.INGEST, NOW, 0), NOW, OPTIONS)
    assert t.close_cycle is CycleStatus.CANCELLED and not t.open_cycle
    assert t.schedule == Schedule(Action.REST, NOW + timedelta(days=1), 0)


def test_cancel_while_resting_changes_nothing() -> None:
    resting = Schedule(Action.REST, NOW + timedelta(hours=2), 0)
    t = operator_cancel(resting, NOW, OPTIONS)
    assert t.schedule == resting and t.close_cycle is None and not t.open_cycle


GUARDED = ProviderOptions.build(
    "p", {"reject_removals_above_percentage": 5, "reject_empty_source_collections": True}
)


def test_sweep_removes_what_was_not_seen_when_no_guard_objects() -> None:
    d = decide_sweep(owned=100, marked=97, fresh=3, confirmed=0, options=GUARDED)
    assert d.remove_fresh and not d.remove_confirmed and d.blocked_reason is None


def test_sweep_above_the_percentage_is_blocked_with_a_reason() -> None:
    d = decide_sweep(owned=100, marked=90, fresh=10, confirmed=0, options=GUARDED)
    assert not d.remove_fresh
    assert d.blocked_reason is not None
    assert "10 of 100" in d.blocked_reason and "5%" in d.blocked_reason


def test_sweep_at_exactly_the_percentage_goes_ahead() -> None:
    d = decide_sweep(owned=100, marked=95, fresh=5, confirmed=0, options=GUARDED)
    assert d.remove_fresh and d.blocked_reason is None


def test_confirmed_removals_go_even_when_fresh_ones_are_blocked() -> None:
    d = decide_sweep(owned=100, marked=80, fresh=10, confirmed=10, options=GUARDED)
    assert d.remove_confirmed and not d.remove_fresh and d.blocked_reason


def test_an_empty_source_removes_nothing_not_even_confirmed_removals() -> None:
    d = decide_sweep(owned=50, marked=0, fresh=40, confirmed=10, options=GUARDED)
    assert not d.remove_fresh and not d.remove_confirmed
    assert d.blocked_reason is not None and "no entities" in d.blocked_reason


def test_an_empty_source_is_swept_when_the_guard_is_off() -> None:
    d = decide_sweep(owned=50, marked=0, fresh=50, confirmed=0, options=ProviderOptions())
    assert d.remove_fresh and d.blocked_reason is None


def test_nothing_to_remove_is_never_blocked() -> None:
    d = decide_sweep(owned=0, marked=0, fresh=0, confirmed=0, options=GUARDED)
    assert d.blocked_reason is None


def test_a_block_is_measured_against_the_cycle_that_found_the_removals() -> None:
    d = decide_sweep(
        owned=100, marked=90, fresh=10, confirmed=0, options=GUARDED, cycle=7, blocked_cycle=None
    )
    assert d.blocked_reason is not None and d.blocked_cycle == 7


def test_an_empty_cycle_keeps_the_earlier_block_as_it_was() -> None:
    d = decide_sweep(
        owned=50, marked=0, fresh=40, confirmed=10, options=GUARDED, cycle=9, blocked_cycle=7
    )
    assert d.blocked_reason is not None and d.blocked_cycle == 7


def test_a_sweep_that_goes_ahead_clears_the_block() -> None:
    d = decide_sweep(
        owned=100, marked=97, fresh=0, confirmed=3, options=GUARDED, cycle=9, blocked_cycle=7
    )
    assert d.remove_confirmed and d.blocked_reason is None and d.blocked_cycle is None


def test_claiming_the_end_of_a_rest_opens_a_cycle_that_bursts_at_once() -> None:
    t = claim_step(Schedule(Action.REST, NOW - timedelta(seconds=1), 0), NOW, has_cycle=True)
    assert t.open_cycle and t.schedule == Schedule(Action.INGEST, NOW, 0)


def test_claiming_a_step_of_the_open_cycle_keeps_its_schedule() -> None:
    current = Schedule(Action.BACKOFF, NOW, 2)
    t = claim_step(current, NOW, has_cycle=True)
    assert not t.open_cycle and t.close_cycle is None and t.schedule == current
    assert claim_step(current, NOW, has_cycle=False).open_cycle  # no cycle to continue


def test_a_lease_is_held_until_it_expires() -> None:
    assert lease_held("w/1", NOW, NOW)
    assert not lease_held("w/1", NOW - timedelta(microseconds=1), NOW)
    assert not lease_held(None, NOW + timedelta(minutes=1), NOW)


def test_reset_rests_due_now() -> None:
    assert reset(NOW).schedule == Schedule(Action.REST, NOW, 0)


@pytest.mark.parametrize(
    ("outcome", "tally"),
    [
        (BurstOutcome.CONTINUED, "completed"),
        (BurstOutcome.DONE, "completed"),
        (BurstOutcome.WAITING, "completed"),
        (BurstOutcome.FAILED, "failed"),
        (BurstOutcome.LOST, "failed"),
        (BurstOutcome.INTERRUPTED, "interrupted"),
        (BurstOutcome.RUNNING, None),
        (BurstOutcome.SKIPPED, None),
    ],
)
def test_every_burst_outcome_counts_once(outcome: BurstOutcome, tally: str | None) -> None:
    assert outcome.tally == tally
