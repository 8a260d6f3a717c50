"""The configuration file: durations, providers by type, errors naming file, provider and key,
and ``celery -A providers.app`` finding the app it describes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from textwrap import dedent

import pytest

import providers.app
from ingestion.durations import parse_duration
from ingestion.settings import Settings
from providers.config import (
    CONFIG_ENV,
    ConfigError,
    configured_ingestion,
    ingestion_from_config,
    load_config,
)
from providers.files import FilesProvider
from providers.github import GitHubProvider
from providers.http import HttpProvider, NextCursor, PageNumber, TokenAuth
from providers.synthetic import SyntheticProvider
from tests.support.ingestions import make_ingestion
from tests.support.paths import ROOT

# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3s", 3),
        ("10m", 600),
        ("1d", 86400),
        ("2w", 14 * 86400),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("500ms", 0.5),
        (" 7 ", 7),
        ("0", 0),
        (5, 5),
        (2.5, 2.5),
        (timedelta(minutes=2), 120),
        ("1D", 86400),
    ],
)
def test_durations_read_as_people_write_them(text: object, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["10 minutes", "-3s", "", "s", "1d-2h", "3 s x", True, None, -1, float("nan"), [1]]
)
def test_anything_else_is_refused_saying_what_is_accepted(text: object) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(text)
    assert "duration" in str(raised.value)


# -- a valid file -------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "ingestion.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text))
    return path


FULL = """\
providers:
  - name: repos
    type: github
    organization: acme
    token_env: ACME_TOKEN
    api_url: http://127.0.0.1:9/api
    include_archived: false
    burst_length: 2s
    burst_interval: 500ms
    rest_length: 1d
    backoff: [30s, 10m, 1h]
    reject_removals_above_percentage: 25
    reject_empty_source_collections: true
  - name: services
    type: http
    url: http://127.0.0.1:9/services
    items: data
    pagination: {style: page, param: p, size_param: n, size: 50}
    auth: {token_env: SERVICES_TOKEN, header: X-Api-Key, scheme: null}
    timeout: 5s
    namespace: inventory
    entity:
      metadata: {name: "{slug}"}
      spec: {owner: "group:{team}"}
  - name: cursor-api
    type: http
    url: http://127.0.0.1:9/items
    pagination: {style: cursor, path: next, param: after}
    item_url: "http://127.0.0.1:9/items/{id}"
    item_path: data
    entity: {metadata: {name: "{id}"}}
  - name: catalog
    type: files
    directory: teams
    files_per_page: 7
"""


def test_a_file_lists_providers_by_type_with_their_settings_and_engine_options(
    tmp_path: Path,
) -> None:
    built = ingestion_from_config(write(tmp_path, FULL), settings=Settings())

    assert list(built.providers) == ["repos", "services", "cursor-api", "catalog"]
    repos = built.registered("repos")
    assert isinstance(repos.provider, GitHubProvider)
    assert repos.provider.organization == "acme"
    assert repos.provider.token_env == "ACME_TOKEN"
    assert repos.provider.include_archived is False
    options = repos.options
    assert options.burst_length == timedelta(seconds=2)
    assert options.burst_interval == timedelta(milliseconds=500)
    assert options.rest_length == timedelta(days=1)
    assert options.backoff == (timedelta(seconds=30), timedelta(minutes=10), timedelta(hours=1))
    assert options.reject_removals_above_percentage == 25.0
    assert options.reject_empty_source_collections is True
    assert repos.provider.graphql.path == "/api/graphql"
    cursor_api = built.registered("cursor-api").provider
    assert isinstance(cursor_api, HttpProvider) and cursor_api.item_path == "data"
    assert cursor_api._location({"id": 7}) == "url:http://127.0.0.1:9/items/7"

    services = built.registered("services").provider
    assert isinstance(services, HttpProvider)
    assert services.pagination == PageNumber(param="p", size_param="n", size=50)
    assert services.auth == TokenAuth("SERVICES_TOKEN", header="X-Api-Key", scheme=None)
    assert services.timeout == 5.0
    assert services.entity.render({"slug": "a", "team": "t"}) == {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "a", "namespace": "inventory"},
        "spec": {"owner": "group:t"},
    }
    cursor_api = built.registered("cursor-api").provider
    assert isinstance(cursor_api, HttpProvider)
    assert cursor_api.pagination == NextCursor(path="next", param="after")

    catalog = built.registered("catalog")
    assert isinstance(catalog.provider, FilesProvider)
    assert catalog.provider.directory == tmp_path / "teams"  # beside the file
    assert catalog.provider.files_per_page == 7
    assert catalog.options.rest_length == timedelta(days=1)  # the engine's default


def test_the_example_file_in_the_repository_loads() -> None:
    built = ingestion_from_config(ROOT / "examples" / "ingestion.yaml", settings=Settings())
    assert sorted(built.providers) == [
        "acme-repositories",
        "catalog-files",
        "inventory-services",
    ]


def test_the_python_api_keeps_working_beside_the_file(database_url: str, tmp_path: Path) -> None:
    # Given a file with a files provider, and one more provider added in Python
    (tmp_path / "teams" / "a").mkdir(parents=True)
    (tmp_path / "teams" / "a" / "catalog-info.yaml").write_text(
        "apiVersion: v1\nkind: Component\nmetadata: {name: from-file}\n"
    )
    path = write(tmp_path, "providers:\n  - {name: catalog, type: files, directory: teams}\n")
    base = make_ingestion(database_url, tmp_path)
    built = ingestion_from_config(path, settings=base.settings)
    built.add_provider(SyntheticProvider("python-one", "http://127.0.0.1:9"))

    # When the configured provider runs a cycle
    built.run_cycle("catalog")

    # Then both are registered and the configured one ingested its file
    assert sorted(built.providers) == ["catalog", "python-one"]
    assert list(built.catalog.refs("catalog")) == ["component:default/from-file"]


# -- invalid files ------------------------------------------------------------------------

GITHUB = "  - name: repos\n    type: github\n    organization: acme\n"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            GITHUB + "    rest_length: 10 minutes\n",
            "provider 'repos' (providers[0]), key rest_length: invalid duration '10 minutes'; "
            "use a number of seconds or a duration such as 500ms, 3s",
        ),
        (
            GITHUB + "    backoff: [1m, soon]\n",
            "provider 'repos' (providers[0]), key backoff[1]: invalid duration 'soon'",
        ),
        (
            GITHUB + "    organisation: acme\n",
            "provider 'repos' (providers[0]), key organisation: is not a setting of type "
            "'github'; expected one of api_url, backoff,",
        ),
        (
            "  - {name: x, type: gitlab}\n",
            "provider 'x' (providers[0]), key type: unknown type 'gitlab'; expected one of "
            "'http', 'github', 'files'",
        ),
        ("  - {name: x, url: http://a}\n", "provider 'x' (providers[0]), key type: is required"),
        (
            "  - {name: x, type: http, entity: {metadata: {name: a}}}\n",
            "provider 'x' (providers[0]), key url: is required",
        ),
        ("  - {type: files, directory: d}\n", "providers[0], key name: is required"),
        (
            "  - {name: x, type: http, url: 'http://a', entity: {metadata: {name: a}},"
            " pagination: {style: pages}}\n",
            "provider 'x' (providers[0]), key pagination.style: unknown style 'pages'; expected "
            "one of 'page', 'offset', 'cursor', 'link'",
        ),
        (
            "  - {name: x, type: http, url: 'http://a', entity: {metadata: {name: a}},"
            " pagination: {style: page, sise: 3}}\n",
            "provider 'x' (providers[0]), key pagination.sise: is not a known key",
        ),
        (
            GITHUB + "    per_page: 500\n",
            "provider 'repos' (providers[0]), key per_page: Input should be less than or equal",
        ),
        (
            GITHUB + "    reject_removals_above_percentage: 150\n",
            "provider 'repos' (providers[0]), key reject_removals_above_percentage: must be a "
            "number from 0 to 100, got 150",
        ),
        (
            GITHUB + "    burst_length: 0s\n",
            "provider 'repos' (providers[0]), key burst_length: must be above 0",
        ),
        (
            "  - {name: x, type: http, url: 'http://a', entity: {spec: {owner: a}}}\n",
            "provider 'x' (providers[0]): entity: the template must set metadata.name",
        ),
        (
            "  - {name: x, type: http, url: 'ftp://a', entity: {metadata: {name: a}}}\n",
            "provider 'x' (providers[0]): url must be http(s), got 'ftp://a'",
        ),
        (GITHUB + GITHUB, "provider 'repos' is defined twice (providers[0] and providers[1])"),
        ("  - name: x\n   type: files\n", "line 3, column 4: YAML error: expected <block end>"),
    ],
)
def test_an_invalid_file_fails_naming_the_file_the_provider_and_the_key(
    tmp_path: Path, text: str, says: str
) -> None:
    path = write(tmp_path, "providers:\n" + text)
    with pytest.raises(ConfigError) as raised:
        ingestion_from_config(path, settings=Settings())
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert says in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "expected a mapping with a 'providers' list at the top"),
        ("- a\n", "expected a mapping with a 'providers' list at the top"),
        ("providers: []\n", "key providers: List should have at least 1 item"),
        ("provider: []\n", "key providers: is required"),
    ],
)
def test_a_file_without_providers_is_refused(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"^{path}: .*{says}"):
        load_config(path)


def test_every_problem_of_a_file_is_listed_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  - {name: a, type: github}\n  - {name: b, type: files, rest_length: x}\n",
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).splitlines() == [
        f"{path}: provider 'a' (providers[0]), key organization: is required",
        f"{path}: provider 'b' (providers[1]), key rest_length: invalid duration 'x'; use a "
        "number of seconds or a duration such as 500ms, 3s, 10m, 1h30m, 1d, 2w",
        f"{path}: provider 'b' (providers[1]), key directory: is required",
    ]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the configuration file"):
        load_config(tmp_path / "nope.yaml")


# -- celery -A providers.app ---------------------------------------------------------------


@pytest.fixture
def fresh_configured() -> Iterator[None]:
    configured_ingestion.cache_clear()
    yield
    configured_ingestion.cache_clear()


def test_the_module_gives_the_configured_app_and_ingestion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_configured: None
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, FULL)))
    built = providers.app.ingestion
    assert sorted(built.providers) == ["catalog", "cursor-api", "repos", "services"]
    assert providers.app.app is built.celery_app
    assert providers.app.celery is built.celery_app
    assert providers.app.ingestion is built  # built once per process
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        providers.app.nothing  # noqa: B018


def test_the_module_says_when_the_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch, fresh_configured: None
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"^{CONFIG_ENV} is not set: set it to the path"):
        providers.app.app  # noqa: B018


def celery(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != CONFIG_ENV} | env
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "providers.app", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_celery_finds_the_app_of_the_configured_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    done = celery(["report"], {CONFIG_ENV: str(path), "INGESTION_QUEUE": "queue-from-env-42"})
    assert done.returncode == 0, done.stderr
    assert "task_default_queue: 'queue-from-env-42'" in done.stdout


def test_celery_fails_at_start_without_the_variable(tmp_path: Path) -> None:
    done = celery(["worker"], {})
    assert done.returncode != 0
    assert f"{CONFIG_ENV} is not set: set it to the path of the configuration file" in done.stderr


def test_celery_fails_at_start_on_an_invalid_file_naming_file_provider_and_key(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "providers:\n" + GITHUB + "    rest_length: often\n")
    done = celery(["worker"], {CONFIG_ENV: str(path)})
    assert done.returncode != 0
    assert (
        f"{path}: provider 'repos' (providers[0]), key rest_length: invalid duration 'often'"
        in done.stderr
    )
