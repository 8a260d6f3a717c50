"""Bad input to the admin API never gets a 5xx: every path and query parameter of every route,
read from ``/openapi.json``, is fed hostile values against a real uvicorn server on SQLite and
Postgres. Every error answers the JSON body ``{"error": ..., "status": ...}``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion import IncrementalIngestion, Settings
from ingestion.api import create_api
from ingestion.settings import EMBEDDED_BROKER
from providers.synthetic import SourceServer
from tests.support.api_server import serve
from tests.support.synthetic_app import build

TOKEN = "admin-token-for-fuzzing-0123456789"
#: A valid value for each path parameter, used while another parameter is fuzzed.
VALID_PATH = {"name": "services", "ref": "component:default/service-0000001", "cycle_id": "1"}

HOSTILE: list[str] = [
    "",
    "\x00",
    "a\x00",
    "\x00component:default/service-0000001",
    "component:default/service-0000001\x00",
    "\x01",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "\t",
    "\n",
    "\r\n",
    "a b",
    " ",
    "\u2028",
    "é",
    "Ünïcödé",
    "\U0001f4a5",
    "\ufffd",
    "\u202e",
    "a" * 63,
    "a" * 64,
    "a" * 255,
    "a" * 256,
    "a" * 512,
    "a" * 513,
    "k:n/" + "a" * 600,
    "x" * 10_000,
    "%",
    "%00",
    "%zz",
    "%ff",
    "%c0%af",
    "%2e%2e%2f",
    "%25",
    "../",
    "../../etc/passwd",
    "..",
    ".",
    "/",
    "//",
    ":",
    "a:",
    ":a/b",
    "a:/b",
    "a:b/",
    "a:b/c/d",
    "a:b:c/d",
    "component:default/service-0000001",
    "COMPONENT:DEFAULT/SERVICE-0000001",
    "'; DROP TABLE catalog_entities; --",
    "\\",
    "'",
    '"',
    "<script>alert(1)</script>",
    "%s%n%x",
    "{}",
    "[]",
    "null",
    "true",
    "-1",
    "0",
    "1",
    "-9223372036854775809",
    "-9223372036854775808",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999999999999999999999",
    "1e308",
    "1.5",
    "NaN",
    "inf",
    "0x10",
    "entity",
]


@dataclass(frozen=True)
class Slot:
    """One parameter of one route: where a fuzzed value goes."""

    method: str
    template: str
    path_params: tuple[str, ...]
    param: str
    where: str  # "path" or "query"


@dataclass
class Fuzzed:
    url: str
    ingestion: IncrementalIngestion
    client: httpx.Client
    slots: list[Slot]

    def send(self, slot: Slot, value: str) -> httpx.Response:
        path = slot.template
        for name in slot.path_params:
            given = value if (slot.where == "path" and name == slot.param) else VALID_PATH[name]
            path = path.replace("{" + name + "}", quote(given, safe=""))
        params = {slot.param: value} if slot.where == "query" else None
        return self.client.request(slot.method, path, params=params)

    def send_raw(self, slot: Slot, raw: str) -> httpx.Response:
        """``raw`` put in the URL exactly as given (percent-escapes and all), not quoted."""
        path = slot.template
        for name in slot.path_params:
            given = raw if (slot.where == "path" and name == slot.param) else VALID_PATH[name]
            path = path.replace("{" + name + "}", given)
        if slot.where == "query":
            path += f"?{slot.param}={raw}"
        return self.client.request(slot.method, httpx.URL(self.url + path))


def parameter_slots(openapi: dict[str, Any]) -> list[Slot]:
    slots = []
    for template, operations in openapi["paths"].items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            path_params = tuple(p["name"] for p in params if p["in"] == "path")
            for p in params:
                if p["in"] in ("path", "query"):
                    slots.append(Slot(method.upper(), template, path_params, p["name"], p["in"]))
    return slots


def check(response: httpx.Response, what: str) -> None:
    """No 5xx; an error is the JSON error body with the response's status."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), what
        body = response.json()
        assert set(body) == {"error", "status"}, f"{what}: {body}"
        assert isinstance(body["error"], str) and body["error"], what
        assert body["status"] == response.status_code, what


@pytest.fixture
def fuzzed(database_url: str, source_server: SourceServer, tmp_path: Path) -> Iterator[Fuzzed]:
    """The API of an app whose provider ``services`` has run a cycle (600 entities)."""
    fast = {"burst_length": 60, "burst_interval": 0, "rest_length": 3600, "backoff": [0.05]}
    specs = [{"name": "services", "url": source_server.url, "per_page": 100, "options": fast}]
    settings = Settings(
        database_url=database_url, broker_url=EMBEDDED_BROKER, broker_dir=tmp_path / "broker"
    )
    ingestion = build(settings, specs)
    assert ingestion.run_cycle("services")[-1].outcome == "done"
    with (
        serve(create_api(ingestion, admin_token=TOKEN)) as url,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as client,
    ):
        slots = parameter_slots(client.get("/openapi.json").json())
        yield Fuzzed(url, ingestion, client, slots)
    ingestion.store.dispose()


@pytest.mark.timeout(90)
def test_every_parameter_of_every_route_survives_hostile_values(fuzzed: Fuzzed) -> None:
    covered = {(s.template, s.param) for s in fuzzed.slots}
    # The routes that take parameters are all found in the OpenAPI description.
    assert {
        ("/incremental/providers/{name}", "name"),
        ("/incremental/providers/{name}/errors", "before"),
        ("/incremental/providers/{name}/errors", "kind"),
        ("/incremental/providers/{name}/checkpoints", "cycle"),
        ("/entities", "provider"),
        ("/entities", "kind"),
        ("/entities", "after"),
        ("/entities", "limit"),
        ("/entities/{ref}", "ref"),
        ("/incremental/providers/{name}/held-removals", "after"),
        ("/incremental/providers/{name}/waiting-removals", "after"),
    } <= covered
    for slot in fuzzed.slots:
        for value in HOSTILE:
            check(fuzzed.send(slot, value), f"{slot} {value[:40]!r}")
        for raw in ("%00", "a%00b", "%zz", "%ff%fe", "%", "%c0%80", "..%2f..%2f", "%0d%0a"):
            check(fuzzed.send_raw(slot, raw), f"{slot} raw {raw!r}")
    # And the API still answers, with the catalog intact.
    assert fuzzed.client.get("/entities", params={"limit": 1000}).json()["items"]
    assert fuzzed.ingestion.store.count_entities("services") == 600


TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=600)
VALUES = st.one_of(
    TEXT,
    st.integers().map(str),
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(["component", ":", "/", "default", "\x00", "a", "%"])).map("".join),
)


@pytest.mark.timeout(90)
def test_random_parameter_values_never_get_a_5xx(fuzzed: Fuzzed) -> None:
    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(slot=st.sampled_from(fuzzed.slots), value=VALUES)
    def probe(slot: Slot, value: str) -> None:
        check(fuzzed.send(slot, value), f"{slot} {value[:40]!r}")

    probe()


def test_known_bad_values_get_a_422_that_names_the_parameter(fuzzed: Fuzzed) -> None:
    cases = [
        ("/entities/%00", "path ref"),
        ("/entities?kind=a%00", "query kind"),
        ("/entities?after=%00", "query after"),
        ("/entities?after=not-a-ref", "query after"),
        ("/entities?provider=" + "p" * 256, "query provider"),
        ("/entities?kind=" + "k" * 64, "query kind"),
        ("/entities/k:n/" + "a" * 520, "path ref"),
        ("/incremental/providers/a%0Ab", "path name"),
        ("/incremental/providers/services/errors?before=99999999999999999999", "query before"),
        ("/incremental/providers/services/checkpoints?cycle=-1", "query cycle"),
        ("/incremental/providers/services/held-removals?after=%00", "query after"),
        ("/incremental/providers/services/waiting-removals?after=a", "query after"),
    ]
    for path, named in cases:
        response = fuzzed.client.get(httpx.URL(fuzzed.url + path))
        assert response.status_code == 422, (path, response.text)
        assert response.json()["status"] == 422
        assert named in response.json()["error"], (path, response.json())
    # A well-formed ref that is not there is a 404, as before.
    assert fuzzed.client.get("/entities/component:default/nope").status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_unexpected_error_answers_the_json_body_and_logs_it(
    fuzzed: Fuzzed, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(ref: str) -> None:
        raise RuntimeError("secret-detail-that-must-not-leak")

    monkeypatch.setattr(fuzzed.ingestion.store, "entity", broken)
    with caplog.at_level(logging.ERROR, logger="ingestion.api"):
        response = fuzzed.client.get("/entities/component:default/service-0000001")
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal error: the API's log has the details",
        "status": 500,
    }
    assert "secret-detail" not in response.text
    logged = [r for r in caplog.records if r.name == "ingestion.api"]
    assert logged and "unexpected error answering GET" in logged[0].getMessage()
    assert logged[0].exc_info is not None
