"""Events in and changes out over the admin API, served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingestion import IncrementalIngestion, Settings
from ingestion.api import InsecureConfiguration, create_api
from ingestion.api.events import webhook_signature
from ingestion.settings import EMBEDDED_BROKER
from providers.synthetic import SourceServer, service_ref, synthetic_event
from tests.support.api_server import serve
from tests.support.synthetic_app import build

pytestmark = pytest.mark.timeout(60)

ADMIN = "admin-token-for-tests-0123456789"
EVENTS = "events-token-for-tests-01234567"
SECRET = "webhook-secret-for-tests-0123456"
FAST = {"burst_length": 60, "burst_interval": 0, "rest_length": 3600, "backoff": [0.05]}


@dataclass
class Api:
    url: str
    ingestion: IncrementalIngestion
    source_url: str

    def event(
        self, body: Any, *, topic: str = "synthetic", token: str | None = EVENTS, **headers: str
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.post(
            f"{self.url}/incremental/events/{topic}",
            content=content,
            headers={"Content-Type": "application/json", **headers},
            timeout=30,
        )

    def signed(self, body: dict[str, Any], secret: str = SECRET, **headers: str) -> httpx.Response:
        content = json.dumps(body).encode()
        signature = webhook_signature(secret, content)
        return self.event(content, token=None, **{"X-Hub-Signature-256": signature, **headers})


def ingestion_for(database_url: str, tmp_path: Path, url: str) -> IncrementalIngestion:
    settings = Settings(
        database_url=database_url, broker_url=EMBEDDED_BROKER, broker_dir=tmp_path / "broker"
    )
    return build(settings, [{"name": "services", "url": url, "per_page": 50, "options": FAST}])


@pytest.fixture
def api(database_url: str, tmp_path: Path, source_server: SourceServer) -> Iterator[Api]:
    ingestion = ingestion_for(database_url, tmp_path, source_server.url)
    app = create_api(ingestion, admin_token=ADMIN, events_token=EVENTS, webhook_secret=SECRET)
    with serve(app) as url:
        yield Api(url, ingestion, source_server.url)
    ingestion.close()


def test_an_event_is_stored_before_the_answer_and_applied_once(api: Api) -> None:
    payload = synthetic_event(api.source_url, added=[42])
    answer = api.event(payload, **{"X-GitHub-Delivery": "gh-1"})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["duplicate"] is False
    stored = api.ingestion.store.event(body["id"])
    assert stored is not None and stored["payload"] == payload
    assert stored["delivery_id"] == "gh-1"

    again = api.event(payload, **{"X-GitHub-Delivery": "gh-1"})
    assert again.status_code == 202 and again.json() == {
        "id": body["id"],
        "duplicate": True,
        "message": "delivered before; applied once",
    }
    assert api.ingestion.apply_events("test/1") == 1
    assert list(api.ingestion.catalog.refs()) == [service_ref(42)]


def test_a_signed_webhook_needs_no_token_and_a_bad_signature_is_refused(api: Api) -> None:
    payload = synthetic_event(api.source_url, added=[1])
    good = api.signed(payload)
    assert good.status_code == 202, good.text
    stored = api.ingestion.store.event(good.json()["id"])
    assert stored is not None
    assert not any("signature" in h or "authorization" in h for h in stored["headers"])

    forged = api.signed(payload, secret="not-the-secret-at-all-0123456789")
    assert forged.status_code == 401
    assert "does not match" in forged.json()["error"]
    assert SECRET not in forged.text
    tampered = api.event(
        json.dumps(synthetic_event(api.source_url, added=[2])).encode(),
        token=None,
        **{"X-Hub-Signature-256": webhook_signature(SECRET, b"{}")},
    )
    assert tampered.status_code == 401


def test_the_events_route_takes_its_own_token_only(api: Api) -> None:
    payload = synthetic_event(api.source_url, added=[1])
    assert api.event(payload, token=None).status_code == 401
    admin = api.event(payload, token=ADMIN)
    assert admin.status_code == 401 and "INGESTION_EVENTS_TOKEN" in admin.json()["error"]
    assert ADMIN not in admin.text
    # and the events token opens nothing else
    other = httpx.get(
        f"{api.url}/changes", headers={"Authorization": f"Bearer {EVENTS}"}, timeout=10
    )
    assert other.status_code == 401
    assert api.ingestion.store.pending_events() == []


def test_bad_events_get_a_clear_error_and_nothing_is_stored(api: Api) -> None:
    not_json = api.event(b"{not json")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    bad_topic = api.event({}, topic="no spaces here")
    assert bad_topic.status_code == 422 and "topic" in bad_topic.text
    huge = api.event(b'"' + b"x" * (5 * 1024 * 1024 + 10) + b'"')
    assert huge.status_code == 413
    assert api.ingestion.store.pending_events() == []


def test_events_are_refused_until_a_token_or_secret_is_set(
    database_url: str, tmp_path: Path, source_server: SourceServer
) -> None:
    ingestion = ingestion_for(database_url, tmp_path, source_server.url)
    with serve(create_api(ingestion, admin_token=ADMIN)) as url:
        answer = httpx.post(
            f"{url}/incremental/events/synthetic",
            content=b"{}",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )
    assert answer.status_code == 403
    assert "INGESTION_EVENTS_TOKEN" in answer.json()["error"]
    with pytest.raises(InsecureConfiguration, match="events token is too short"):
        create_api(ingestion, admin_token=ADMIN, events_token="short")
    ingestion.close()


def test_changes_are_read_after_an_id_a_page_at_a_time(api: Api) -> None:
    api.ingestion.register_providers()
    for n in range(5):
        api.event(synthetic_event(api.source_url, added=[n]))
    api.event(synthetic_event(api.source_url, removed=[0]))
    api.ingestion.apply_events("test/1")
    headers = {"Authorization": f"Bearer {ADMIN}"}

    seen: list[tuple[str, str]] = []
    after = 0
    while True:
        page = httpx.get(
            f"{api.url}/changes", params={"after": after, "limit": 4}, headers=headers, timeout=10
        ).json()
        seen += [(c["kind"], c["ref"]) for c in page["items"]]
        if not page["items"]:
            assert page["next_after"] == after
            break
        assert all(c["source"] == "event" and c["event_id"] for c in page["items"])
        after = page["next_after"]
    assert seen == [("added", service_ref(n)) for n in range(5)] + [("removed", service_ref(0))]
    first = httpx.get(f"{api.url}/changes", params={"limit": 1}, headers=headers).json()
    assert first["items"][0]["entity"]["metadata"]["name"] == "service-0000000"
    bad = httpx.get(f"{api.url}/changes", params={"after": -1}, headers=headers)
    assert bad.status_code == 422


def test_stored_events_are_listed_newest_first_with_what_each_provider_did(api: Api) -> None:
    api.ingestion.register_providers()
    headers = {"Authorization": f"Bearer {ADMIN}"}
    first = api.event(synthetic_event(api.source_url, added=[1])).json()["id"]
    api.ingestion.apply_events("test/1")
    second = api.event(synthetic_event(api.source_url, removed=[1]), **{"X-Delivery-Id": "x-2"})
    second_id = second.json()["id"]

    listed = httpx.get(f"{api.url}/incremental/events", headers=headers, timeout=10).json()
    assert [e["id"] for e in listed["items"]] == [second_id, first]
    assert listed["items"][0]["status"] == "pending" and listed["items"][0]["result"] is None
    assert listed["items"][1]["result"] == {
        "services": "added 1, changed 0, unchanged 0, removed 0"
    }
    assert "payload" not in listed["items"][0]
    waiting = httpx.get(
        f"{api.url}/incremental/events", params={"status": "pending"}, headers=headers
    ).json()
    assert [e["id"] for e in waiting["items"]] == [second_id]
    one = httpx.get(f"{api.url}/incremental/events/{second_id}", headers=headers).json()
    assert one["delivery_id"] == "x-2"
    assert one["payload"] == synthetic_event(api.source_url, removed=[1])
    assert "authorization" not in one["headers"]
    missing = httpx.get(f"{api.url}/incremental/events/999999", headers=headers)
    assert missing.status_code == 404 and "no event 999999" in missing.json()["error"]
    # The events token only delivers; it reads nothing
    denied = httpx.get(
        f"{api.url}/incremental/events", headers={"Authorization": f"Bearer {EVENTS}"}
    )
    assert denied.status_code == 401


def test_a_large_body_without_credentials_is_refused_before_it_is_read(api: Api) -> None:
    body = b'"' + b"x" * (6 * 1024 * 1024) + b'"'
    anonymous = api.event(body, token=None)
    assert anonymous.status_code == 401
    with_token = api.event(body)
    assert with_token.status_code == 413


def test_an_open_api_refuses_events_a_browser_sends_from_another_site(
    database_url: str, tmp_path: Path, source_server: SourceServer
) -> None:
    ingestion = ingestion_for(database_url, tmp_path, source_server.url)
    with serve(create_api(ingestion, insecure=True)) as url:
        payload = json.dumps(synthetic_event(source_server.url, added=[1])).encode()
        forged = httpx.post(
            f"{url}/incremental/events/synthetic",
            content=payload,
            headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
            timeout=10,
        )
        local = httpx.post(f"{url}/incremental/events/synthetic", content=payload, timeout=10)
    assert forged.status_code == 403 and "cross-site" in forged.json()["error"]
    assert local.status_code == 202
    ingestion.close()
