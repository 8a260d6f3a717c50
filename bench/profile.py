"""Where a worker's time goes during a first and an unchanged cycle: py-spy on the pool process.

Samples are taken of wall time (``--idle``), so time spent waiting for Postgres counts, under
the statement that waited. Only samples inside a burst count: those of the burst's own thread
and those of its committer thread, which commits one page while the burst reads the next.
Each is put in the first category that matches a frame, walking from the innermost frame out.
Because the two threads overlap, a category's share is of thread time, not of the cycle's wall
time; its time per entity is that share times the cycle's time.
"""

from __future__ import annotations

import re
import selectors
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.figures import REST, THROUGHPUT, Config
from bench.harness import BenchError, CycleTiming, Records, Worker
from ingestion.store import Store

PROFILE = THROUGHPUT // 2
RATE = 200  # samples per second
ATTACH = 30.0  # seconds py-spy may take to attach before the cycle begins

# (category, pattern on "function (file)"), tried innermost frame first.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern))
    for category, pattern in (
        ("database: statements (driver and server)", r"^([\w<>]+\.)*do_execute(many)? "),
        ("database: commit", r"^([\w<>]+\.)*(do_commit|_commit_impl) "),
        ("canonical JSON (json.dumps, sort_keys)", r"\(json/"),
        ("envelope validation", r"^(validate|valid_name|_validate_string_map) "),
        ("annotate, ref, sha256 (entities.prepare)", r"^prepare \(ingestion/entities"),
        ("the source (generating entities)", r"\(bench/source"),
        ("SQLAlchemy (statements, parameters, results)", r"\(sqlalchemy/"),
        ("burst thread waiting for the page in flight", r"^_BurstRun\._settle "),
        ("engine: page checks and bookkeeping", r"\(ingestion/"),
        ("Celery, kombu", r"\((celery|kombu|billiard)/"),
    )
)
OTHER = "other Python"
# A sample is inside a burst when one of its frames starts with one of these: the burst's
# thread, or the committer thread writing one of its pages.
BURST_FRAMES = ("Engine.run_step ", "Store.commit_page ")


@dataclass(frozen=True)
class Breakdown:
    """Wall time of one cycle of the pool process, by category."""

    cycle: CycleTiming
    samples: Counter[str]

    def share(self, category: str) -> float:
        total = sum(self.samples.values())
        return self.samples[category] / total if total else 0.0

    def per_entity_us(self, category: str) -> float:
        return self.share(category) * self.cycle.seconds / self.cycle.entities * 1e6


@dataclass(frozen=True)
class Profile:
    entities: int
    first: Breakdown
    unchanged: Breakdown

    def categories(self) -> list[str]:
        seen = self.first.samples + self.unchanged.samples
        return [c for c, _ in seen.most_common()]


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def profile(config: Config) -> Profile | None:
    """Profile one first and one unchanged cycle; ``None`` when py-spy is not installed."""
    spy = py_spy()
    if spy is None:
        return None
    count = config.size(PROFILE)
    spec = {
        "name": "profile",
        "count": count,
        "options": {"burst_interval": 0, "rest_length": REST},
    }
    db = config.postgres().create()
    records = Records(db.url)
    timeout = config.timeout(count)
    try:
        # Registered and resting, so that the first cycle waits until py-spy is attached.
        store = Store(db.url)
        store.ensure_providers(["profile"])
        store.dispose()
        db.execute("UPDATE ingestion_providers SET due_at = now() + interval '1 day'")
        with Worker(config.workdir, db.url, config.redis_url, [spec]) as worker:
            [pid] = worker.pool_pids()
            with _Spy(spy, pid, config.workdir / "profile-first.txt") as first_spy:
                worker.start_cycle("profile")
                first = records.wait_cycle("profile", timeout=timeout)
            with _Spy(spy, pid, config.workdir / "profile-unchanged.txt") as again_spy:
                worker.start_cycle("profile")
                again = records.wait_cycle("profile", after=first.cycle_id, timeout=timeout)
    finally:
        records.close()
        db.drop()
    return Profile(
        count,
        Breakdown(first, first_spy.breakdown()),
        Breakdown(again, again_spy.breakdown()),
    )


class _Spy:
    """``py-spy record`` of one process, from ``with`` to the end of the block."""

    def __init__(self, spy: str, pid: int, output: Path) -> None:
        self.args = [
            spy,
            "record",
            "--pid",
            str(pid),
            "--idle",
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--output",
            str(output),
        ]
        self.output = output
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Spy:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        assert self.proc.stdout is not None
        # py-spy says it is sampling once it has attached: the cycle begins after that.
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=ATTACH)
        said = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        if "Sampling process" not in said:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise BenchError(
                f"py-spy did not attach within {ATTACH:g}s: "
                f"{(said + err.decode(errors='replace')).strip()[-2000:]}"
            )
        return self

    def __exit__(self, *_: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise BenchError("py-spy did not stop") from None
        if not self.output.exists():
            raise BenchError(f"py-spy wrote no profile: {err.decode(errors='replace')[-2000:]}")

    def breakdown(self) -> Counter[str]:
        samples: Counter[str] = Counter()
        for line in self.output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            category = categorize(stack.split(";"))
            if category is not None:
                samples[category] += int(count)
        return samples


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?):\d+\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/bench/", "/ingestion/"):
        if marker in path:
            head = marker.strip("/").split("/")[-1] + "/" if marker.startswith("/") else ""
            path = head + path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def categorize(frames: list[str]) -> str | None:
    """The category of one sample, from its frames (outermost first); ``None`` outside a burst
    (the time between bursts is figure 5)."""
    named = [_short(f) for f in frames]
    if not any(f.startswith(BURST_FRAMES) for f in named):
        return None
    for frame in reversed(named):
        for category, pattern in RULES:
            if pattern.search(frame):
                return category
    return OTHER
