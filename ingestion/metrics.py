"""Prometheus metrics, read from the database at scrape time.

Bursts run in many worker processes on many hosts, and each burst commits its counts in the
same transaction as its pages (``ingestion_bursts`` and ``ingestion_cycles``). Reading those rows
when Prometheus scrapes gives one consistent view of the whole deployment from a single target:
no per-process files, no counts from work that was rolled back, nothing lost when a worker
restarts. See ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ingestion.store import Database, stats

BURST_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
CYCLE_BUCKETS: tuple[float, ...] = (
    1,
    10,
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    24 * 3600,
    3 * 24 * 3600,
)

#: (metric name without ``_total``, help, the BurstTotals field it reads)
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("ingestion_bursts_started", "Bursts that claimed their provider.", "started"),
    (
        "ingestion_bursts_completed",
        "Bursts that ended without error (continued, done, or waiting out a rate limit).",
        "completed",
    ),
    ("ingestion_bursts_failed", "Bursts that failed or whose worker was lost.", "failed"),
    ("ingestion_bursts_interrupted", "Bursts stopped by an operator step.", "interrupted"),
    ("ingestion_pages", "Pages committed.", "pages"),
    ("ingestion_entities_committed", "Entities inserted or changed.", "written"),
    ("ingestion_entities_unchanged", "Entities seen again with the same content.", "unchanged"),
    ("ingestion_entities_removed", "Entities removed by sweeps.", "removed"),
    ("ingestion_entities_rejected", "Entities rejected as invalid or owned elsewhere.", "rejected"),
    (
        "ingestion_removal_candidates_checked",
        "Removal candidates a provider's removal checks asked the source about.",
        "checked",
    ),
)


class IngestionCollector(Collector):
    """Collects every ingestion metric from ``db`` when the registry is scraped."""

    def __init__(
        self,
        db: Database,
        *,
        burst_buckets: Sequence[float] = BURST_BUCKETS,
        cycle_buckets: Sequence[float] = CYCLE_BUCKETS,
        overdue_after: float = 5.0,
    ) -> None:
        self.db = db
        self.overdue_after = timedelta(seconds=overdue_after)
        self.burst_buckets = tuple(burst_buckets)
        self.cycle_buckets = tuple(cycle_buckets)

    def describe(self) -> Iterable[Metric]:
        # Describing without reading the database keeps registration free of I/O.
        return []

    def collect(self) -> Iterator[Metric]:
        totals = stats.burst_totals(self.db)
        for name, documentation, field in COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=["provider"])
            for row in totals:
                counter.add_metric([row.provider], getattr(row, field))
            yield counter
        yield _histogram(
            "ingestion_burst_duration_seconds",
            "Duration of bursts that have ended, from claim to their last commit.",
            stats.burst_durations(self.db, self.burst_buckets),
        )
        yield _histogram(
            "ingestion_cycle_duration_seconds",
            "Duration of completed cycles, from their first burst to their sweep.",
            stats.cycle_durations(self.db, self.cycle_buckets),
        )
        yield from _gauges(stats.provider_gauges(self.db))
        overdue = GaugeMetricFamily(
            "ingestion_providers_overdue",
            "Providers due for longer than a reconciler interval and held by no burst: work "
            "waiting behind a deep queue, or no worker or beat running.",
        )
        overdue.add_metric([], stats.overdue_providers(self.db, self.overdue_after))
        yield overdue
        feed = stats.feed_stats(self.db)
        for name, documentation, value in (
            (
                "ingestion_events_waiting",
                "Events stored and not applied yet (no worker running, or a backlog).",
                feed.events_waiting,
            ),
            (
                "ingestion_events_oldest_waiting_seconds",
                "Age of the oldest event not applied yet; 0 when none waits.",
                feed.oldest_waiting_seconds,
            ),
            (
                "ingestion_changes_last_id",
                "The id of the change feed's latest change: compare with a consumer's position.",
                feed.last_change_id,
            ),
        ):
            gauge = GaugeMetricFamily(name, documentation)
            gauge.add_metric([], value)
            yield gauge


def _histogram(name: str, documentation: str, rows: list[stats.Histogram]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=["provider"])
    for row in rows:
        buckets: list[tuple[str, float]] = [(_bound(b), float(n)) for b, n in row.buckets]
        buckets.append(("+Inf", float(row.count)))
        family.add_metric([row.provider], buckets, sum_value=row.total)
    return family


def _bound(value: float) -> str:
    return repr(float(value))


def _gauges(rows: list[stats.ProviderGauge]) -> Iterator[Metric]:
    running = GaugeMetricFamily(
        "ingestion_provider_running", "1 while a burst holds the provider.", labels=["provider"]
    )
    attempts = GaugeMetricFamily(
        "ingestion_provider_attempts",
        "Failed attempts of the current step (0 when healthy).",
        labels=["provider"],
    )
    due = GaugeMetricFamily(
        "ingestion_provider_next_action_timestamp_seconds",
        "When the provider's next action is due (Unix time), labelled by that action.",
        labels=["provider", "action"],
    )
    blocked = GaugeMetricFamily(
        "ingestion_provider_blocked_removals",
        "Removals held back by a sweep guard, waiting for confirmation.",
        labels=["provider"],
    )
    last_error = GaugeMetricFamily(
        "ingestion_provider_last_error_timestamp_seconds",
        "When the current cycle last recorded an error (Unix time); 0 when it recorded none. "
        "A new cycle resets it to 0.",
        labels=["provider"],
    )
    for row in rows:
        running.add_metric([row.provider], 1.0 if row.running else 0.0)
        attempts.add_metric([row.provider], row.attempts)
        due.add_metric([row.provider, row.action], row.due_at.timestamp())
        blocked.add_metric([row.provider], row.blocked)
        failed = row.last_error_at
        last_error.add_metric([row.provider], failed.timestamp() if failed is not None else 0.0)
    yield from (running, attempts, due, blocked, last_error)


def registry_for(db: Database, **options: Any) -> CollectorRegistry:
    """A registry of its own holding an :class:`IngestionCollector` (no process metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestionCollector(db, **options))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(registry)
