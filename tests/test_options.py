"""``add_provider`` accepts the documented options and refuses bad ones with clear messages."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ingestion import (
    DEFAULT_BACKOFF,
    DeferredEntity,
    EntityIteratorResult,
    IncrementalEntityProvider,
    IncrementalIngestion,
    ProviderConfigError,
    ProviderOptions,
    Settings,
)
from tests.support.paths import ROOT


class Named(IncrementalEntityProvider[dict[str, int], None]):
    def __init__(self, name: Any) -> None:
        self.name = name

    def get_provider_name(self) -> str:
        return self.name  # type: ignore[no-any-return]

    def around(self, burst: Callable[[None], Any]) -> None:
        burst(None)

    def next(
        self, context: None, cursor: dict[str, int] | None = None
    ) -> EntityIteratorResult[Any]:
        return EntityIteratorResult(done=True, entities=[DeferredEntity({})])


@pytest.fixture
def ingestion(tmp_path: Path) -> IncrementalIngestion:
    return IncrementalIngestion(
        settings=Settings(database_url=f"sqlite:///{tmp_path}/x.db", broker_dir=tmp_path / "b")
    )


def test_the_documented_options_are_accepted(ingestion: IncrementalIngestion) -> None:
    ingestion.add_provider(
        Named("services"),
        burst_length=timedelta(seconds=3),
        burst_interval=timedelta(seconds=3),
        rest_length=timedelta(days=1),
        backoff=[timedelta(seconds=5), timedelta(seconds=30)],
        reject_removals_above_percentage=5,
        reject_empty_source_collections=True,
    )
    options = ingestion.registered("services").options
    assert options.burst_length == timedelta(seconds=3)
    assert options.backoff == (timedelta(seconds=5), timedelta(seconds=30))
    assert options.reject_removals_above_percentage == 5.0
    assert options.reject_empty_source_collections is True


def test_durations_take_the_same_text_as_the_configuration_file(
    ingestion: IncrementalIngestion,
) -> None:
    ingestion.add_provider(Named("services"), burst_length="500ms", backoff=["1m", 30, "1h30m"])
    options = ingestion.registered("services").options
    assert options.burst_length == timedelta(milliseconds=500)
    assert options.backoff == (timedelta(minutes=1), timedelta(seconds=30), timedelta(hours=1.5))


def documented_options(document: str, heading: str) -> list[str]:
    """The names in the first column of the first table after ``heading`` in ``document``."""
    text = (ROOT / document).read_text()
    rows: list[str] = []
    for line in text[text.index(heading) :].splitlines()[1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return [m.group(1) for row in rows[2:] if (m := re.match(r"\| `(\w+)` \|", row))]


@pytest.mark.parametrize(
    ("document", "heading"),
    [
        ("README.md", "### Options of `add_provider`"),
        ("docs/providers.md", "Engine options, the same for every type:"),
    ],
)
def test_every_option_is_documented_in_order(document: str, heading: str) -> None:
    assert documented_options(document, heading) == list(ProviderOptions.names())


def test_defaults_follow_the_reference_module(ingestion: IncrementalIngestion) -> None:
    ingestion.add_provider(Named("services"))
    options = ingestion.registered("services").options
    assert options.backoff == DEFAULT_BACKOFF
    assert (
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=3),
    ) == DEFAULT_BACKOFF
    assert options.reject_removals_above_percentage is None
    assert options.reject_empty_source_collections is False


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"burst_lenght": 3}, "unknown option(s) burst_lenght"),
        ({"burst_interval": timedelta(seconds=-1)}, "burst_interval: must not be negative"),
        ({"rest_length": -5}, "rest_length: must not be negative (a duration), got -5s"),
        ({"burst_length": timedelta(0)}, "burst_length: must be above 0"),
        ({"burst_length": "3 lightyears"}, "burst_length: invalid duration '3 lightyears'"),
        ({"burst_length": [3]}, "burst_length: expected a duration, got list"),
        ({"backoff": []}, "backoff: must have at least one step"),
        ({"backoff": "1m"}, "backoff: must be a list of durations, got str"),
        ({"backoff": [timedelta(seconds=1), timedelta(seconds=-1)]}, "backoff[1]: must not be"),
        ({"reject_removals_above_percentage": 101}, "reject_removals_above_percentage: must be"),
        ({"reject_removals_above_percentage": -1}, "reject_removals_above_percentage: must be"),
        ({"reject_removals_above_percentage": True}, "reject_removals_above_percentage: must"),
        ({"reject_empty_source_collections": "yes"}, "reject_empty_source_collections: must"),
    ],
)
def test_bad_options_are_refused_naming_provider_and_option(
    ingestion: IncrementalIngestion, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ProviderConfigError) as info:
        ingestion.add_provider(Named("services"), **options)
    assert "provider 'services'" in str(info.value)
    assert fragment in str(info.value)
    assert "services" not in ingestion.providers


@pytest.mark.parametrize("name", ["", "   ", None])
def test_an_empty_provider_name_is_refused(ingestion: IncrementalIngestion, name: Any) -> None:
    with pytest.raises(ProviderConfigError, match="get_provider_name\\(\\) must return"):
        ingestion.add_provider(Named(name))


def test_a_duplicate_provider_name_is_refused(ingestion: IncrementalIngestion) -> None:
    ingestion.add_provider(Named("services"))
    with pytest.raises(ProviderConfigError, match="provider 'services': a provider of that name"):
        ingestion.add_provider(Named("services"))


def test_something_that_is_not_a_provider_is_refused(ingestion: IncrementalIngestion) -> None:
    with pytest.raises(ProviderConfigError, match="expects an IncrementalEntityProvider"):
        ingestion.add_provider(object())  # type: ignore[arg-type]


def test_two_ingestions_in_one_process_keep_their_own_tasks(tmp_path: Path) -> None:
    def make(name: str) -> IncrementalIngestion:
        settings = Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", broker_dir=tmp_path)
        return IncrementalIngestion(settings=settings)

    apps = [make(name) for name in ("first", "second", "third")]
    for ingestion in apps:
        for name, task in ingestion.tasks.items():
            assert ingestion.celery_app.tasks[name].__class__ is task.__class__, name
    runs = {ingestion.celery_app.tasks["ingestion.burst"].__class__ for ingestion in apps}
    assert len(runs) == 3
