"""Entity refs, envelope validation and the canonical hash."""

from __future__ import annotations

from typing import Any

import pytest

from ingestion.entities import PROVIDER_ANNOTATION, EntityRejected, entity_ref, prepare, validate


def entity(**metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": metadata}


def test_refs_are_lower_case_with_the_default_namespace() -> None:
    assert entity_ref("Component", None, "My-Service") == "component:default/my-service"
    assert entity_ref("API", "Team.A", "x") == "api:team.a/x"


@pytest.mark.parametrize("name", ["a", "a-b", "a_b.c-d", "A1", "a--b", "x" * 63])
def test_valid_names_pass(name: str) -> None:
    validate(entity(name=name))


@pytest.mark.parametrize("name", ["", "-a", "a-", "a\n", "a b", "a/b", "x" * 64, 5, None])
def test_invalid_names_are_rejected_by_the_name_rule(name: Any) -> None:
    with pytest.raises(EntityRejected) as info:
        validate(entity(name=name))
    assert info.value.rule == "metadata.name"


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"kind": "Component", "metadata": {"name": "a"}}, "apiVersion"),
        ({"apiVersion": "v1", "metadata": {"name": "a"}}, "kind"),
        ({"apiVersion": "v1", "kind": "Com ponent", "metadata": {"name": "a"}}, "kind"),
        ({"apiVersion": "v1", "kind": "Component"}, "metadata"),
        (entity(name="a", namespace="bad ns"), "metadata.namespace"),
        (entity(name="a", annotations={"k": 1}), "metadata.annotations"),
        (entity(name="a", labels=["x"]), "metadata.labels"),
        ("not a mapping", "entity"),
    ],
)
def test_each_envelope_rule_is_named(body: Any, rule: str) -> None:
    with pytest.raises(EntityRejected) as info:
        validate(body)
    assert info.value.rule == rule


def test_prepare_annotates_the_provider_and_hashes_canonically() -> None:
    a = prepare(entity(name="svc", annotations={"z": "1", "a": "2"}), "github", "loc")
    b = prepare(entity(annotations={"a": "2", "z": "1"}, name="svc"), "github", "loc")
    assert a.ref == "component:default/svc"
    assert a.body["metadata"]["annotations"][PROVIDER_ANNOTATION] == "github"
    assert a.hash == b.hash  # key order does not matter
    c = prepare(entity(name="svc", annotations={"z": "1", "a": "3"}), "github", "loc")
    assert c.hash != a.hash


def test_prepare_does_not_change_the_providers_own_dict() -> None:
    original = entity(name="svc")
    prepare(original, "p", None)
    assert "annotations" not in original["metadata"]


def test_an_entity_json_cannot_encode_is_rejected() -> None:
    body = entity(name="svc")
    body["spec"] = {"when": object()}
    with pytest.raises(EntityRejected) as info:
        prepare(body, "p", None)
    assert info.value.rule == "json"
