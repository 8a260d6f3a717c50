"""Backstage's envelope rules, one table of accepted and refused values per rule."""

from __future__ import annotations

from typing import Any

import pytest

from ingestion.entities import EntityRejected, prepare, validate
from ingestion.errors import ProviderConfigError
from providers._names import entity_name, valid_tag
from providers.github import GitHubProvider
from providers.http import EntityTemplate

PREFIX_253 = "b" * 61 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 63  # 253 characters
PREFIX_254 = "b" * 62 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 63  # 254 characters
assert len(PREFIX_253) == 253 and len(PREFIX_254) == 254
_DROP = object()  # a root field to leave out


def base(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "svc", **metadata},
        "spec": {"type": "service"},
    }


def with_root(**fields: Any) -> dict[str, Any]:
    entity = base()
    for key, value in fields.items():
        if value is _DROP:
            del entity[key]
        else:
            entity[key] = value
    return entity


def refused(entity: Any) -> EntityRejected:
    with pytest.raises(EntityRejected) as info:
        validate(entity)
    return info.value


def case(value: Any, id: str) -> Any:
    return pytest.param(value, id=id)


# -- root fields and spec ------------------------------------------------------------------

ROOT_OK = [
    case({}, "all-four"),
    case({"spec": _DROP}, "no-spec"),
    case({"spec": {}}, "empty-spec"),
    case({"spec": {"nested": {"deep": [1, 2]}}}, "nested-spec"),
    case({"apiVersion": "v1"}, "other-api-version"),
    case({"kind": "Template"}, "other-kind"),
    case({"metadata": {"name": "x", "uid": "u", "etag": "e", "generation": 3}}, "server-fields"),
    case({"metadata": {"name": "x", "whatever": {"a": 1}}}, "unknown-metadata-field"),
]
ROOT_BAD = [
    case({"status": {}}, "status"),
    case({"relations": []}, "relations"),
    case({"extra": 1}, "extra"),
    case({"Spec": {}}, "capitalised-spec"),
    case({"": 1}, "empty-key"),
    case({"metadata ": {}}, "key-with-space"),
    case({"apiversion": "v1"}, "lower-case-apiversion"),
    case({"_id": "x"}, "underscore-id"),
]
SPEC_BAD = [
    case(["a"], "list"),
    case([], "empty-list"),
    case("service", "string"),
    case(None, "null"),
    case(1, "number"),
    case(True, "bool"),
    case(("a",), "tuple"),
    case({"a"}, "set"),
]


@pytest.mark.parametrize("fields", ROOT_OK)
def test_root_fields_accepted(fields: dict[str, Any]) -> None:
    validate(with_root(**fields))


@pytest.mark.parametrize("fields", ROOT_BAD)
def test_root_fields_refused(fields: dict[str, Any]) -> None:
    error = refused(with_root(**fields))
    assert error.rule == "root"
    assert repr(next(iter(fields))) in error.message


@pytest.mark.parametrize("spec", SPEC_BAD)
def test_spec_that_is_not_a_mapping_is_refused(spec: Any) -> None:
    assert refused(with_root(spec=spec)).rule == "spec"


# -- apiVersion ----------------------------------------------------------------------------

API_OK = [
    case("backstage.io/v1alpha1", "backstage"),
    case("v1", "bare"),
    case("1", "digit"),
    case("V1Beta", "upper-version"),
    case("my-company.net/v1", "hyphen-prefix"),
    case("a--b.example/v1", "hyphen-run-prefix"),
    case("x" * 63, "63-version"),
    case(f"{PREFIX_253}/v1", "253-prefix"),
]
API_BAD = [
    case("a/b/v1", "two-slashes"),
    case("backstage.io//v1", "double-slash"),
    case("backstage.io/v1\n", "trailing-newline"),
    case("v1\n", "bare-trailing-newline"),
    case("", "empty"),
    case("/v1", "empty-prefix"),
    case("backstage.io/", "empty-version"),
    case("Backstage.io/v1", "upper-prefix"),
    case("backstage.io/v1.2", "dot-in-version"),
    case("backstage.io/v1-alpha", "hyphen-in-version"),
    case("x" * 64, "64-version"),
    case(f"{PREFIX_254}/v1", "254-prefix"),
    case("-a.io/v1", "prefix-leading-hyphen"),
    case("a..io/v1", "prefix-empty-label"),
    case(None, "null"),
    case(1, "number"),
    case(_DROP, "missing"),
]


@pytest.mark.parametrize("value", API_OK)
def test_api_version_accepted(value: str) -> None:
    validate(with_root(apiVersion=value))


@pytest.mark.parametrize("value", API_BAD)
def test_api_version_refused(value: Any) -> None:
    assert refused(with_root(apiVersion=value)).rule == "apiVersion"


# -- kind ----------------------------------------------------------------------------------

KIND_OK = [
    case("Component", "component"),
    case("API", "upper"),
    case("a", "one-letter"),
    case("x1", "letter-digit"),
    case("kind", "lower"),
    case("Z" * 63, "63"),
    case("CustomKind2", "camel-digit"),
    case("Ab9Zz", "mixed"),
]
KIND_BAD = [
    case("Component\n", "trailing-newline"),
    case("", "empty"),
    case("1Component", "leading-digit"),
    case("Com ponent", "space"),
    case("Com-ponent", "hyphen"),
    case("Com_ponent", "underscore"),
    case("Z" * 64, "64"),
    case("Kömponent", "non-ascii"),
    case(None, "null"),
    case(_DROP, "missing"),
]


@pytest.mark.parametrize("value", KIND_OK)
def test_kind_accepted(value: str) -> None:
    validate(with_root(kind=value))


@pytest.mark.parametrize("value", KIND_BAD)
def test_kind_refused(value: Any) -> None:
    assert refused(with_root(kind=value)).rule == "kind"


# -- metadata.name -------------------------------------------------------------------------

NAME_OK = [
    case("a", "one"),
    case("A1", "upper-digit"),
    case("a-b_c.d", "each-separator"),
    case("dou--ble", "hyphen-run"),
    case("a_-b", "mixed-run"),
    case("a..b", "dot-run"),
    case("x" * 63, "63"),
    case("9", "digit"),
    case("a.-_b", "three-run"),
]
NAME_BAD = [
    case("svc\n", "trailing-newline"),
    case("\nsvc", "leading-newline"),
    case("", "empty"),
    case("-a", "leading-hyphen"),
    case("a_", "trailing-underscore"),
    case(".a", "leading-dot"),
    case("a b", "space"),
    case("a/b", "slash"),
    case("x" * 64, "64"),
    case("café", "non-ascii"),
    case(5, "number"),
    case(None, "null"),
]


@pytest.mark.parametrize("value", NAME_OK)
def test_name_accepted(value: str) -> None:
    validate(base(name=value))


@pytest.mark.parametrize("value", NAME_BAD)
def test_name_refused(value: Any) -> None:
    error = refused(base(name=value))
    assert error.rule == "metadata.name"
    assert repr(value) in error.message


def test_a_name_with_a_trailing_newline_never_reaches_a_ref() -> None:
    with pytest.raises(EntityRejected):
        prepare(base(name="svc\n"), "p", None)


def test_a_long_offending_value_is_shown_truncated() -> None:
    message = refused(base(name="a " * 500)).message
    assert "'a a a" in message and "..." in message and len(message) < 250


# -- metadata.namespace --------------------------------------------------------------------

NAMESPACE_OK = [
    case("default", "default"),
    case("a", "one"),
    case("team-a", "hyphen"),
    case("team--a", "hyphen-run"),
    case("9", "digit"),
    case("a1-b2-c3", "parts"),
    case("x" * 63, "63"),
    case("0-0", "digits"),
]
NAMESPACE_BAD = [
    case("default\n", "trailing-newline"),
    case("", "empty"),
    case("Team", "upper"),
    case("team.a", "dot"),
    case("team_a", "underscore"),
    case("-team", "leading-hyphen"),
    case("team-", "trailing-hyphen"),
    case("bad ns", "space"),
    case("x" * 64, "64"),
    case(None, "null"),
]


@pytest.mark.parametrize("value", NAMESPACE_OK)
def test_namespace_accepted(value: str) -> None:
    validate(base(namespace=value))


@pytest.mark.parametrize("value", NAMESPACE_BAD)
def test_namespace_refused(value: Any) -> None:
    assert refused(base(namespace=value)).rule == "metadata.namespace"


# -- annotation and label keys -------------------------------------------------------------

KEY_OK = [
    case("key", "bare"),
    case("backstage.io/source-location", "prefixed"),
    case("a.b.c/x", "deep-prefix"),
    case("example.com/Mixed_Case.v2", "name-part-mixed"),
    case("ex--ample.com/a--b", "runs"),
    case("x" * 63, "63-name"),
    case(f"{PREFIX_253}/k", "253-prefix"),
    case("k8s/x", "single-label-prefix"),
]
KEY_BAD = [
    case("a/b/c", "two-slashes"),
    case("key\n", "trailing-newline"),
    case("example.com/key\n", "prefixed-trailing-newline"),
    case("", "empty"),
    case("/key", "empty-prefix"),
    case("example.com/", "empty-name"),
    case("Example.com/key", "upper-prefix"),
    case("ex_ample.com/key", "underscore-prefix"),
    case(f"{PREFIX_254}/k", "254-prefix"),
    case("x" * 64, "64-name"),
    case("a key", "space"),
    case(1, "not-a-string"),
]


@pytest.mark.parametrize("field", ["annotations", "labels"])
@pytest.mark.parametrize("key", KEY_OK)
def test_keys_accepted(field: str, key: str) -> None:
    validate(base(**{field: {key: "v"}}))


@pytest.mark.parametrize("field", ["annotations", "labels"])
@pytest.mark.parametrize("key", KEY_BAD)
def test_keys_refused(field: str, key: Any) -> None:
    error = refused(base(**{field: {key: "v"}}))
    assert error.rule == f"metadata.{field}"
    assert repr(key)[:50] in error.message


# -- annotation and label values -----------------------------------------------------------

ANNOTATION_VALUE_OK = [
    case("", "empty"),
    case("any text, with spaces", "spaces"),
    case("line\nbreak\n", "newlines"),
    case("https://x.example/a?b=c", "url"),
    case("x" * 5000, "long"),
    case("-", "separator"),
    case("ünïcode", "unicode"),
    case("{json: true}", "json-like"),
]
ANNOTATION_VALUE_BAD = [
    case(1, "int"),
    case(1.5, "float"),
    case(True, "bool"),
    case(None, "null"),
    case(["a"], "list"),
    case({"a": "b"}, "mapping"),
    case(b"bytes", "bytes"),
    case(object(), "object"),
]
LABEL_VALUE_OK = [
    case("", "empty"),
    case("v", "one"),
    case("prod", "word"),
    case("Random_Value.Generator", "mixed"),
    case("a--b", "run"),
    case("x" * 63, "63"),
    case("1.2.3", "version"),
    case("A", "upper"),
]
LABEL_VALUE_BAD = [
    case("Random value Generator", "spaces"),
    case("v\n", "trailing-newline"),
    case("-v", "leading-hyphen"),
    case("v.", "trailing-dot"),
    case("x" * 64, "64"),
    case("a/b", "slash"),
    case(" ", "blank"),
    case(2, "int"),
    case(None, "null"),
]


@pytest.mark.parametrize("value", ANNOTATION_VALUE_OK)
def test_annotation_values_accepted(value: str) -> None:
    validate(base(annotations={"example.com/k": value}))


@pytest.mark.parametrize("value", ANNOTATION_VALUE_BAD)
def test_annotation_values_refused(value: Any) -> None:
    assert refused(base(annotations={"k": value})).rule == "metadata.annotations"


@pytest.mark.parametrize("value", LABEL_VALUE_OK)
def test_label_values_accepted(value: str) -> None:
    validate(base(labels={"example.com/k": value}))


@pytest.mark.parametrize("value", LABEL_VALUE_BAD)
def test_label_values_refused(value: Any) -> None:
    error = refused(base(labels={"k": value}))
    assert error.rule == "metadata.labels"
    assert repr(value) in error.message


@pytest.mark.parametrize("field", ["annotations", "labels"])
@pytest.mark.parametrize("value", [["a"], "a", 1, None], ids=["list", "string", "int", "null"])
def test_annotations_and_labels_are_mappings(field: str, value: Any) -> None:
    error = refused(base(**{field: value}))
    assert error.rule == f"metadata.{field}"
    assert f"metadata.{field} {value!r} must be a mapping" in error.message


@pytest.mark.parametrize("field", ["annotations", "labels"])
def test_annotations_and_labels_may_be_absent_or_empty(field: str) -> None:
    validate(base())
    validate(base(**{field: {}}))


# -- metadata.tags -------------------------------------------------------------------------

TAG_OK = [
    case("java", "word"),
    case("c++", "plus"),
    case("c#", "hash"),
    case("team:payments", "colon"),
    case("a-b-c", "hyphens"),
    case("x" * 63, "63"),
    case("9", "digit"),
    case("k8s", "mixed-digits"),
]
TAG_BAD = [
    case("java\n", "trailing-newline"),
    case("Java", "uppercase"),
    case("snake_case", "underscore"),
    case("-java", "leading-dash"),
    case("java-", "trailing-dash"),
    case("a--b", "dash-run"),
    case("a.b", "dot"),
    case("two words", "space"),
    case("", "empty"),
    case("x" * 64, "64"),
    case(3, "int"),
    case(None, "null"),
]


@pytest.mark.parametrize("tag", TAG_OK)
def test_tags_accepted(tag: str) -> None:
    validate(base(tags=["ok", tag]))
    assert valid_tag(tag)


@pytest.mark.parametrize("tag", TAG_BAD)
def test_tags_refused(tag: Any) -> None:
    error = refused(base(tags=["ok", tag]))
    assert error.rule == "metadata.tags"
    assert "metadata.tags[1]" in error.message and repr(tag) in error.message
    assert not valid_tag(tag)


@pytest.mark.parametrize(
    "tags", [case("java", "string"), case({"java": 1}, "mapping"), case(None, "null")]
)
def test_tags_are_a_list(tags: Any) -> None:
    assert refused(base(tags=tags)).rule == "metadata.tags"


def test_an_empty_tag_list_is_accepted() -> None:
    validate(base(tags=[]))


# -- metadata.title and metadata.description -----------------------------------------------

TEXT_OK = [
    case("", "empty"),
    case("My Service", "words"),
    case("line\nbreak", "newline"),
    case("x" * 1000, "long"),
    case("ünïcode", "unicode"),
    case(" ", "blank"),
    case("42", "digits"),
    case("a/b", "slash"),
]
TEXT_BAD = [
    case(42, "int"),
    case(1.5, "float"),
    case(False, "bool"),
    case(None, "null"),
    case(["x"], "list"),
    case({"en": "x"}, "mapping"),
    case(b"x", "bytes"),
    case(("x",), "tuple"),
]


@pytest.mark.parametrize("field", ["title", "description"])
@pytest.mark.parametrize("value", TEXT_OK)
def test_title_and_description_accepted(field: str, value: str) -> None:
    validate(base(**{field: value}))


@pytest.mark.parametrize("field", ["title", "description"])
@pytest.mark.parametrize("value", TEXT_BAD)
def test_title_and_description_refused(field: str, value: Any) -> None:
    assert refused(base(**{field: value})).rule == f"metadata.{field}"


# -- metadata.links ------------------------------------------------------------------------

LINKS_OK = [
    case([], "none"),
    case([{"url": "https://example.com"}], "url-only"),
    case([{"url": "http://localhost:3000/a?b#c"}], "port-query-fragment"),
    case([{"url": "https://x.io", "title": "X", "icon": "dashboard", "type": "admin"}], "full"),
    case([{"url": "ftp://files.example/x"}], "other-scheme"),
    case([{"url": "https://[::1]/"}], "ipv6"),
    case([{"url": "https://a.io"}, {"url": "https://b.io", "title": ""}], "two"),
    case([{"url": "https://a.io", "extra": 1}], "extra-field"),
    case([{"url": "mailto:team@example.com"}], "mailto"),
    case([{"url": "file:///etc/x"}], "file-without-host"),
    case([{"url": "file://server/share/x"}], "file-with-host"),
    case([{"url": "urn:isbn:1"}], "urn"),
    case([{"url": "tel:+1-555-0100"}], "tel"),
    case([{"url": "HTTPS://A.IO"}], "upper-case-scheme"),
    case([{"url": "https://user:pw@a.io:8443/x"}], "userinfo-and-port"),
    case([{"url": "wss://a.io/socket"}], "websocket"),
    case([{"url": "https://a%2Eio/"}], "percent-encoded-host"),
    case([{"url": "git+ssh://git@a.io/r.git"}], "compound-scheme"),
]
LINKS_BAD = [
    case([{"title": "no url"}], "no-url"),
    case([{"url": "/relative/path"}], "relative-url"),
    case([{"url": "example.com"}], "no-scheme"),
    case([{"url": "https://"}], "no-host"),
    case([{"url": ""}], "empty-url"),
    case([{"url": 5}], "url-not-string"),
    case([{"url": "http://x:port/"}], "bad-port"),
    case([{"url": "http://a.io:65536/"}], "port-above-65535"),
    case([{"url": "http://exa mple.com"}], "space-in-host"),
    case([{"url": "https://exa%20mple.com"}], "encoded-space-in-host"),
    case([{"url": "https://a<b.io/"}], "forbidden-host-code-point"),
    # new URL() percent-encodes or drops these three; a link keeps no whitespace or control
    # character at all
    case([{"url": "https://a.io/x y"}], "space-in-path"),
    case([{"url": "urn:isbn:1\n"}], "trailing-newline"),
    case([{"url": "https://a.io/\x7f"}], "control-character"),
    case([{"url": "ws://"}], "special-scheme-without-host"),
    case([{"url": "http://user@/x"}], "userinfo-without-host"),
    case([{"url": "https://[::1"}], "unclosed-ipv6"),
    case([{"url": "file://host:80/x"}], "file-host-with-port"),
    case([{"url": "git://a<b/x"}], "forbidden-code-point-in-opaque-host"),
    case([{"url": "1http://a.io"}], "scheme-starts-with-digit"),
    case([{"url": "https://a.io", "title": 1}], "title-not-string"),
    case([{"url": "https://a.io", "icon": None}], "icon-null"),
    case([{"url": "https://a.io", "type": ["x"]}], "type-not-string"),
    case(["https://a.io"], "string-item"),
    case({"url": "https://a.io"}, "not-a-list"),
    case(None, "null"),
]


@pytest.mark.parametrize("links", LINKS_OK)
def test_links_accepted(links: list[Any]) -> None:
    validate(base(links=links))


@pytest.mark.parametrize("links", LINKS_BAD)
def test_links_refused(links: Any) -> None:
    assert refused(base(links=links)).rule == "metadata.links"


def test_a_refused_link_url_names_the_field_and_the_rule() -> None:
    error = refused(base(links=[{"url": "https://a.io"}, {"url": "http://exa mple.com"}]))
    assert error.message.startswith("metadata.links[1].url 'http://exa mple.com' must be a URL")
    assert "a host for http, https, ws, wss and ftp" in error.message


# -- names made from source identifiers ----------------------------------------------------

RAW_NAMES = [
    case("dou--ble", "separator-run"),
    case("svc\n", "trailing-newline"),
    case("my repo", "space"),
    case("--", "only-separators"),
    case("", "empty"),
    case("ünïcode/名前", "non-ascii"),
    case("x" * 200, "long"),
    case("a" + "-" * 100 + "b", "long-run"),
    case("\ud800", "lone-surrogate"),
]


@pytest.mark.parametrize("raw", RAW_NAMES)
def test_entity_name_makes_a_valid_name_of_anything(raw: str) -> None:
    validate(base(name=entity_name(raw)))


def test_entity_name_keeps_a_name_with_a_separator_run() -> None:
    assert entity_name("dou--ble") == "dou--ble"
    assert entity_name("svc\n") != "svc\n"


# -- provider settings that would make every entity invalid --------------------------------


@pytest.mark.parametrize(
    "namespace", [case("Team.A", "upper-dot"), case("ns\n", "trailing-newline"), case("", "empty")]
)
def test_providers_refuse_a_namespace_that_is_not_a_dns_label(namespace: str) -> None:
    with pytest.raises(ProviderConfigError, match="namespace"):
        GitHubProvider("gh", "acme", namespace=namespace)
    with pytest.raises(ProviderConfigError, match="namespace"):
        EntityTemplate({"metadata": {"name": "{name}"}}, namespace=namespace)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        pytest.param("api_version", "a/b/v1", id="api-version-two-slashes"),
        pytest.param("kind", "Com ponent", id="kind-space"),
    ],
)
def test_the_http_template_refuses_an_invalid_default(setting: str, value: str) -> None:
    with pytest.raises(ProviderConfigError, match=setting):
        EntityTemplate({"metadata": {"name": "{name}"}}, **{setting: value})
