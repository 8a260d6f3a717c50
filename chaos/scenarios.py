"""The scenarios: one fault each, then the engine must complete a cycle on its own.

Each function starts the lab's workers and beat, injects its fault, records it with
``lab.fault`` and returns the first cycle completed after it; the runner then checks the
catalog against the source and measures the stall. A scenario raises :class:`ScenarioFailed`
when a check of its own does not hold.
"""

from __future__ import annotations

import json
import math
import re
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from chaos.lab import PROVIDER, Lab, Process, raise_unless
from ingestion import CycleStatus
from ingestion.tasks import BURST, TRIGGER

Cycle = dict[str, Any]

#: How long the "stopped 30 s" faults last.
OUTAGE = 30.0


@dataclass(frozen=True)
class Scenario:
    """A named fault: what it does (for the report), its function and its hard time limit."""

    name: str
    done: str
    run: Callable[[Lab], Cycle]
    timeout: float = 60.0
    lab: dict[str, Any] = field(default_factory=dict)


# -- helpers ----------------------------------------------------------------------------


def _mid_burst(lab: Lab, min_pages: int = 2) -> dict[str, Any]:
    """Start the workers and wait for a burst that has committed ``min_pages`` pages."""
    lab.start()
    burst: dict[str, Any] = lab.wait(lambda: lab.running_burst(min_pages), "a burst in progress")
    return burst


def _in_rest(lab: Lab) -> Cycle:
    """Start the workers and wait for the first cycle to complete and its rest to begin."""
    lab.start()
    return lab.wait_resting()


def _bursts_queued(lab: Lab) -> int:
    """How many burst messages wait in the lab's queue (not reserved by a worker)."""
    client = lab.redis.client()
    try:
        messages = client.lrange(lab.queue, 0, -1)
    finally:
        client.close()
    return sum(json.loads(raw).get("headers", {}).get("task") == BURST for raw in messages)


def _consumers(lab: Lab, *, paused: bool) -> None:
    """Make every worker stop (or resume) consuming the lab's queue; wait for their replies."""
    control = lab.client.celery_app.control
    workers = sum(1 for name in lab.processes if name.startswith("w"))

    def answered() -> bool:
        command = control.cancel_consumer if paused else control.add_consumer
        # ``limit``: return once every worker answered, not after the whole timeout.
        replies = command(lab.queue, reply=True, timeout=2, limit=workers)
        return len(replies or []) >= workers

    lab.wait(answered, f"workers {'pausing' if paused else 'resuming'} their consumers", 20)


def _purge(lab: Lab) -> int:
    """Purge the lab's queue as ``celery purge`` does; the number of messages dropped."""
    with lab.client.celery_app.connection_for_write() as conn:
        return int(conn.default_channel.queue_purge(lab.queue) or 0)


def _burst_error(lab: Lab, after: int, text: str) -> bool:
    return any(text in (b["error"] or "") for b in lab.bursts() if b["id"] > after)


def _burst_row(lab: Lab, burst_id: int) -> dict[str, Any]:
    """The burst's row as it stands now."""
    [row] = [b for b in lab.bursts() if b["id"] == burst_id]
    return row


def _ending_in_log(process: Process, burst: dict[str, Any]) -> str | None:
    """How ``burst`` ended according to its worker's log (its closing line, or a kill at
    the hard time limit); ``None`` while it has not ended there."""
    log = process.log()
    closing = re.search(
        rf"burst provider={PROVIDER} cycle={burst['cycle_id']} burst={burst['number']} "
        r".* outcome=(\w+)",
        log,
    )
    if closing is not None:
        return closing.group(1)
    return "killed at its hard time limit" if "Hard time limit" in log else None


# -- no fault ---------------------------------------------------------------------------


def _from_first_page(lab: Lab) -> float:
    """Start the workers, wait for the first committed page and record the fault (present
    from the start) as beginning then: the workers' start-up is not a stall."""
    lab.start()
    first: float = lab.wait(lambda: min(lab.page_times(), default=None), "the first page")
    lab.fault(first, first)
    return first


def baseline(lab: Lab) -> Cycle:
    """No fault: the stall every other recovery compares with."""
    return lab.wait_completed(after=_from_first_page(lab))


# -- worker processes -------------------------------------------------------------------


def sigkill_worker(lab: Lab) -> Cycle:
    burst = _mid_burst(lab)
    started = time.time()
    lab.worker_of(burst).signal(signal.SIGKILL)
    lab.fault(started, before=burst["id"] - 1)
    cycle = lab.wait_completed(after=started)
    lost = _burst_row(lab, burst["id"])
    raise_unless(lost["outcome"] == "lost", f"the killed burst ended {lost['outcome']}")
    return cycle


def sigstop_past_lease(lab: Lab) -> Cycle:
    burst = _mid_burst(lab)
    victim = lab.worker_of(burst)
    started = time.time()
    victim.signal(signal.SIGSTOP)
    lab.fault(started, before=burst["id"] - 1)
    expires = lab.lease_expires()
    # Keep it stopped until its lease has run out and another worker has taken over.
    lab.wait(
        lambda: any(
            b["id"] > burst["id"] and b["pages"] >= 1 and not b["worker"].startswith(victim.name)
            for b in lab.bursts()
        ),
        "another worker taking the step over",
    )
    if expires is not None:
        lab.hold(expires.timestamp() + 1 - time.time())
    frozen = _burst_row(lab, burst["id"])["pages"]  # what it committed before it froze
    victim.signal(signal.SIGCONT)
    # The resumed burst must end without a commit: its lease ran out while it was frozen.
    ending = lab.wait(
        lambda: _ending_in_log(victim, burst), f"{victim.name} ending its resumed burst", 30
    )
    cycle = lab.wait_completed(after=started)
    pages = _burst_row(lab, burst["id"])["pages"]
    raise_unless(
        pages == frozen, f"the resumed burst committed {pages - frozen} page(s) after SIGCONT"
    )
    raise_unless(
        ending not in ("continued", "done"), f"the resumed burst ended {ending}, as if it held"
    )
    return cycle


def sigterm_mid_burst(lab: Lab) -> Cycle:
    burst = _mid_burst(lab)
    victim = lab.worker_of(burst)
    started = time.time()
    victim.proc.send_signal(signal.SIGTERM)  # the main process only, as a supervisor does
    lab.fault(started, before=burst["id"] - 1)
    lab.wait(lambda: not victim.alive(), f"{victim.name} ending its warm shutdown", 30)
    cycle = lab.wait_completed(after=started)
    ended = _burst_row(lab, burst["id"])
    raise_unless(
        ended["outcome"] in ("continued", "done"),
        f"the burst under warm shutdown ended {ended['outcome']}, not continued",
    )
    raise_unless(victim.proc.returncode == 0, f"exit status {victim.proc.returncode}")
    return cycle


# -- messages ---------------------------------------------------------------------------


def five_deliveries(lab: Lab) -> Cycle:
    _in_rest(lab)
    before = lab.last_burst_id()
    doorbell = lab.client.store.trigger(PROVIDER)  # the step is recorded; no message yet
    kwargs = {"provider": PROVIDER, "ticket": doorbell.ticket, "cycle": None, "burst": 1}
    started = time.time()
    for _ in range(5):
        lab.client.tasks[BURST].apply_async(kwargs=kwargs, queue=lab.queue)
    lab.fault(started, before=before)
    cycle = lab.wait_completed(after=started)
    ran = [b for b in lab.bursts() if b["ticket"] == doorbell.ticket]
    raise_unless(len(ran) == 1, f"{len(ran)} bursts ran for one step")
    pattern = re.compile(rf"skipped {PROVIDER} ticket {doorbell.ticket}: (duplicate|stale) message")
    skipped = sum(len(pattern.findall(log)) for _, log in lab.logs())
    raise_unless(skipped >= 4, f"{skipped} of the 4 extra deliveries were skipped")
    return cycle


def triggers_racing(lab: Lab) -> Cycle:
    burst = _mid_burst(lab, min_pages=1)
    started = time.time()

    def trigger(n: int) -> None:
        if n % 3 == 0:  # from a worker, as `celery call ingestion.trigger` does
            lab.client.tasks[TRIGGER].apply_async(args=[PROVIDER], queue=lab.queue)
        else:
            lab.client.trigger(PROVIDER)

    with ThreadPoolExecutor(4) as pool:
        sent = []
        for n in range(60):  # about three seconds of triggers, through bursts and pauses
            sent.append(pool.submit(trigger, n))
            lab.hold(0.05)
        for future in sent:
            future.result()
    lab.fault(started, started, before=burst["id"] - 1)
    return lab.wait_completed(after=started)


def purge_in_rest(lab: Lab) -> Cycle:
    _in_rest(lab)
    before = lab.last_burst_id()
    _consumers(lab, paused=True)
    lab.client.start(PROVIDER)  # an operator ends the rest; the message waits in the queue
    lab.wait(lambda: _bursts_queued(lab) >= 1, "the step's message in the queue")
    started = time.time()
    raise_unless(_purge(lab) >= 1, "nothing to purge")
    lab.fault(started, started, before=before)  # recovery counts from the purge
    _consumers(lab, paused=False)
    return lab.wait_completed(after=started)


def purge_in_burst(lab: Lab) -> Cycle:
    burst = _mid_burst(lab)
    _consumers(lab, paused=True)
    lab.wait(
        lambda: not lab.client.store.status(PROVIDER).running and _bursts_queued(lab) >= 1,
        "the burst's end and its next step's message in the queue",
    )
    started = time.time()
    raise_unless(_purge(lab) >= 1, "nothing to purge")
    # Only a purge that drops a step the cycle still needs tests the recovery of a lost
    # message: no burst running, and pages left to read that nothing else will announce.
    [cycle] = [c for c in lab.cycles() if c["id"] == burst["cycle_id"]]
    pages = math.ceil(lab.count / lab.per_page)
    raise_unless(
        cycle["status"] == CycleStatus.RUNNING
        and cycle["pages"] < pages
        and not lab.client.store.status(PROVIDER).running,
        f"at the purge the cycle was {cycle['status']} at page {cycle['pages']} of {pages}: "
        "the purge dropped no step the cycle needed",
    )
    # The purge is the fault: recovery counts from it, through the consumers' return.
    lab.fault(started, started, before=burst["id"] - 1)
    _consumers(lab, paused=False)
    return lab.wait_completed(after=started)


# -- the broker -------------------------------------------------------------------------


def _redis_fault(lab: Lab, *, in_rest: bool, outage: float) -> Cycle:
    if in_rest:
        _in_rest(lab)
        before = lab.last_burst_id()
    else:
        before = _mid_burst(lab)["id"] - 1
    started = time.time()
    if outage:
        lab.redis.stop()
        lab.hold(outage)
        lab.redis.start()
    else:
        lab.redis.restart()
    lab.fault(started, before=before, in_rest=in_rest)
    cycle = lab.wait_completed(after=started)
    dead = [p.name for p in lab.processes.values() if not p.alive()]
    raise_unless(not dead, f"died with the broker: {', '.join(dead)}")
    return cycle


def redis_restart_burst(lab: Lab) -> Cycle:
    return _redis_fault(lab, in_rest=False, outage=0)


def redis_restart_rest(lab: Lab) -> Cycle:
    return _redis_fault(lab, in_rest=True, outage=0)


def redis_stop_burst(lab: Lab) -> Cycle:
    return _redis_fault(lab, in_rest=False, outage=OUTAGE)


def redis_stop_rest(lab: Lab) -> Cycle:
    return _redis_fault(lab, in_rest=True, outage=OUTAGE)


# -- the database -----------------------------------------------------------------------


def _postgres_fault(lab: Lab, *, mode: str, outage: float) -> Cycle:
    burst = _mid_burst(lab)
    started = time.time()
    if outage:
        lab.postgres.stop("fast")
        lab.hold(2)
        lab.glimpse()  # what an operator asking for the status gets meanwhile
        lab.hold(outage - 2)
        lab.postgres.start()
    else:
        lab.postgres.restart("immediate" if mode == "immediate" else "fast")
    lab.fault(started, before=burst["id"] - 1)
    cycle = lab.wait_completed(after=started)
    # The burst's worker records the real cause once the database is back, rather than a
    # lost worker (in a 30 s stop too: the default page timeout outlasts the outage).
    raise_unless(
        _burst_error(lab, burst["id"] - 1, "the database"),
        "no burst recorded the database outage as its cause",
    )
    return cycle


def postgres_restart_fast(lab: Lab) -> Cycle:
    return _postgres_fault(lab, mode="fast", outage=0)


def postgres_restart_immediate(lab: Lab) -> Cycle:
    return _postgres_fault(lab, mode="immediate", outage=0)


def postgres_stop(lab: Lab) -> Cycle:
    return _postgres_fault(lab, mode="fast", outage=OUTAGE)


# -- the provider and the source --------------------------------------------------------


def _provider_misbehaves(lab: Lab, control: str, error: str, failure: str) -> Cycle:
    """Mid-burst, tell the provider to misbehave once (the ``control`` file); the cycle must
    complete, and a burst must have failed with ``error``."""
    burst = _mid_burst(lab)
    started = time.time()
    (lab.control / control).write_text("")
    lab.fault(started, started, before=burst["id"] - 1)
    cycle = lab.wait_completed(after=started)
    raise_unless(_burst_error(lab, burst["id"] - 1, error), failure)
    return cycle


def next_hangs(lab: Lab) -> Cycle:
    return _provider_misbehaves(
        lab, "hang", "outran its time limit", "no burst failed with 'outran its time limit'"
    )


def next_fails_20_percent(lab: Lab) -> Cycle:
    (lab.control / "fail-share").write_text("0.2")
    _from_first_page(lab)

    def first_cycle_closed() -> Cycle | None:
        cycles = lab.cycles()
        return cycles[0] if cycles and cycles[0]["status"] != "running" else None

    first = lab.wait(first_cycle_closed, "the first cycle to close", timeout=lab.left() - 5)
    failed = sum(b["outcome"] == "failed" for b in lab.bursts() if b["cycle_id"] == first["id"])
    raise_unless(
        first["status"] == "completed",
        f"the cycle was {first['status']} after {failed} failed bursts, at page "
        f"{first['pages']} of {lab.count // lab.per_page}: its progress is thrown away",
    )
    return first


def shrink_under_guard(lab: Lab) -> Cycle:
    lab.start()
    first = lab.wait_completed()
    before = lab.last_burst_id()
    started = time.time()
    with lab.source.lock:
        lab.source.removed = {n for n in range(lab.count) if n % 10}  # 90% gone
    lab.client.start(PROVIDER)
    shrunk = lab.wait_completed(after=first["ended_at"].timestamp())
    raise_unless(
        shrunk["removed"] == 0 and shrunk["blocked"] > 0,
        f"the guard let the sweep remove {shrunk['removed']} of {lab.count}",
    )
    raise_unless(lab.client.catalog.count(PROVIDER) == lab.count, "the catalog shrank")
    raise_unless(lab.client.store.status(PROVIDER).blocked_sweep is not None, "no blocked sweep")
    with lab.source.lock:
        lab.source.removed.clear()
    back = time.time()
    lab.client.start(PROVIDER)
    lab.fault(started, back, before=before)
    cycle = lab.wait_completed(after=shrunk["ended_at"].timestamp())
    blocked = lab.client.store.status(PROVIDER).blocked_sweep
    raise_unless(blocked is None, f"the sweep is still blocked: {blocked}")
    return cycle


def invalid_entities(lab: Lab) -> Cycle:
    lab.source.invalid = set(range(7, lab.count, 50))
    cycle = lab.wait_completed(after=_from_first_page(lab))
    raise_unless(
        cycle["rejected"] == len(lab.source.invalid),
        f"{cycle['rejected']} rejected, {len(lab.source.invalid)} invalid",
    )
    recorded = lab.client.errors(PROVIDER, kind="entity", limit=1000)
    raise_unless(len(recorded) == len(lab.source.invalid), f"{len(recorded)} error records")
    return cycle


def bad_cursor(lab: Lab) -> Cycle:
    return _provider_misbehaves(
        lab,
        "bad-cursor",
        "JSON cannot encode",
        "no burst failed naming the cursor JSON cannot encode",
    )


SCENARIOS = [
    Scenario("baseline", "no fault: one cycle, for comparison", baseline),
    Scenario(
        "sigkill-worker", "SIGKILL of the burst's worker (main and pool process)", sigkill_worker
    ),
    Scenario(
        "sigstop-past-lease",
        "SIGSTOP of the burst's worker until its lease has "
        "expired and another worker took over, then SIGCONT",
        sigstop_past_lease,
    ),
    Scenario(
        "sigterm-mid-burst",
        "SIGTERM (warm shutdown) of the burst's worker mid-burst",
        sigterm_mid_burst,
    ),
    Scenario("five-deliveries", "one burst message delivered five times", five_deliveries),
    Scenario(
        "triggers-racing",
        "60 triggers (API and `ingestion.trigger` task) over 3 s of bursts",
        triggers_racing,
    ),
    Scenario(
        "purge-in-rest",
        "operator start in a rest, its message purged from the queue",
        purge_in_rest,
    ),
    Scenario(
        "purge-in-burst",
        "queue purged after a burst, dropping the next step's message",
        purge_in_burst,
    ),
    Scenario(
        "redis-restart-burst", "Redis restarted (no persistence) mid-burst", redis_restart_burst
    ),
    Scenario(
        "redis-restart-rest",
        "Redis restarted (no persistence) in a 4 s rest",
        redis_restart_rest,
        lab={"options": {"rest_length": 4}},
    ),
    Scenario("redis-stop-burst", "Redis stopped 30 s mid-burst", redis_stop_burst, timeout=110),
    Scenario(
        "redis-stop-rest",
        "Redis stopped 30 s in a 4 s rest",
        redis_stop_rest,
        timeout=110,
        lab={"options": {"rest_length": 4}},
    ),
    Scenario(
        "postgres-restart-fast", "Postgres restarted (`-m fast`) mid-burst", postgres_restart_fast
    ),
    Scenario(
        "postgres-restart-immediate",
        "Postgres restarted (`-m immediate`, a crash) mid-burst",
        postgres_restart_immediate,
    ),
    Scenario(
        "postgres-stop",
        "Postgres stopped 30 s (`-m fast`) mid-burst, the default page timeout (60 s)",
        postgres_stop,
        timeout=110,
        lab={"settings": {"INGESTION_PAGE_TIMEOUT": "60"}},
    ),
    Scenario("next-hangs", "one next() hanging past the page timeout (3 s)", next_hangs),
    Scenario(
        "next-fails-20",
        "20% of next() calls failing (at random), from the start",
        next_fails_20_percent,
        timeout=75,
    ),
    Scenario(
        "shrink-under-guard",
        "the source shrinking 90% under a 50% removal guard, then coming back",
        shrink_under_guard,
        lab={"options": {"reject_removals_above_percentage": 50}},
    ),
    Scenario("invalid-entities", "40 of 2,000 entities invalid (bad names)", invalid_entities),
    Scenario("bad-cursor", "one next() returning a cursor JSON cannot encode", bad_cursor),
]
