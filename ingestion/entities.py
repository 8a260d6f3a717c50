"""Entity refs, validation of the Backstage envelope, and the canonical content hash.

The envelope rules are those of ``@backstage/catalog-model``'s default policies: no root fields
but ``apiVersion``, ``kind``, ``metadata`` and ``spec``, and the Kubernetes-style formats of
names, namespaces, annotation and label keys, label values and tags. Every pattern must match
the whole value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, NamedTuple, TypeGuard
from urllib.parse import unquote

import orjson

from ingestion.errors import EntityRejected

DEFAULT_NAMESPACE = "default"

#: The annotation every ingested entity carries, naming the provider that owns it.
PROVIDER_ANNOTATION = "backstage/incremental-entity-provider"

_MAX_NAME = 63  # names, kinds, namespaces, DNS labels, tags, apiVersion versions
_MAX_SUBDOMAIN = 253
_SHOWN = 100  # characters of an offending value quoted in a message

_NAME = re.compile(r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_KIND = re.compile(r"[a-zA-Z][a-zA-Z0-9]*")
_DNS_LABEL = re.compile(r"[a-z0-9]+(?:-+[a-z0-9]+)*")
_VERSION = re.compile(r"[a-zA-Z0-9]+")
_TAG = re.compile(r"[a-z0-9:+#]+(?:-[a-z0-9:+#]+)*")
#: A scheme and ``:``, then no ASCII whitespace nor control character (C0, DEL, C1).
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):([^\x00-\x20\x7f-\x9f]*)")
#: The URL standard's special schemes but ``file``: they need a host.
_SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
_TWO_SLASHES = frozenset({"//", "\\\\", "/\\", "\\/"})  # special schemes take either slash
_AUTHORITY_END = re.compile(r"[/\\?#]")
_OPAQUE_AUTHORITY_END = re.compile(r"[/?#]")
#: The URL standard's forbidden host code points, and its forbidden domain code points.
_FORBIDDEN_HOST = re.compile(r"[\x00\t\n\r #/:<>?@\[\\\]^|]")
_FORBIDDEN_DOMAIN = re.compile(r"[#%/:<>?@\[\\\]^|\x00-\x20\x7f]")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_WINDOWS_DRIVE = re.compile(r"[A-Za-z][:|]")
_MAX_PORT = 65535
_ABSENT: Any = object()  # a key that is not there, as opposed to one set to None
_ROOT_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec"})

_NAME_RULE = "1-63 characters of [A-Za-z0-9-_.], starting and ending with a letter or digit"
_DNS_LABEL_RULE = "1-63 characters of [a-z0-9] and '-', starting and ending with a letter or digit"
_KEY_RULE = f"an optional DNS subdomain and '/', then {_NAME_RULE}"
_TAG_RULE = "1-63 characters of [a-z0-9:+#], in parts joined by single '-'"
_URL_RULE = (
    "a URL: a scheme and ':', then no whitespace or control character, and a host for "
    "http, https, ws, wss and ftp"
)


#: The canonical encoding the hashes of new writes use. 1: ``json.dumps(sort_keys=True,
#: separators=(",", ":"), ensure_ascii=False)``. 2: ``orjson`` with sorted keys, the same text
#: but for floats below 1e-4 (``0.00001``, not ``1e-05``) and NaN and the infinities (``null``).
#: A row records the version of its hash (``catalog_entities.hash_version``): a version 1 hash
#: that differs is compared again in version 1 (:func:`legacy_hash`) before the entity counts as
#: changed, so an upgrade rewrites nothing that did not change.
CANONICAL_VERSION = 2
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _not_json(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def canonical_json(body: object) -> bytes:
    """The canonical JSON of ``body`` (version :data:`CANONICAL_VERSION`), UTF-8."""
    return orjson.dumps(body, default=_not_json, option=_ORJSON_OPTIONS)


def legacy_hash(body: object) -> str:
    """The content hash of ``body`` in canonical version 1."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class PreparedEntity(NamedTuple):
    """An entity ready to be written: its ref, canonical body and content hash.

    Immutable, and made for every entity of every page: a named tuple is made in a third of
    the time of a frozen dataclass, which sets each field through ``object.__setattr__``.
    """

    ref: str
    name: str
    location_key: str | None
    body: dict[str, Any]
    canonical: str
    hash: str


def entity_ref(kind: str, namespace: str | None, name: str) -> str:
    """``kind:namespace/name``, lower-case, with the default namespace filled in."""
    return f"{kind}:{namespace or DEFAULT_NAMESPACE}/{name}".lower()


def valid_name(value: object) -> bool:
    """Whether ``value`` is a valid Backstage entity name (also the rule of a label value)."""
    return isinstance(value, str) and len(value) <= _MAX_NAME and _NAME.fullmatch(value) is not None


def valid_kind(value: object) -> bool:
    """Whether ``value`` is a valid Backstage kind: a letter, then letters and digits."""
    return isinstance(value, str) and _kind_ok(value)


# Kinds, apiVersions and annotation and label keys repeat from one entity to the next: their
# verdicts are remembered, so that the common entity costs a dictionary look-up for each.
_remembered = lru_cache(maxsize=4096)


@_remembered
def _kind_ok(value: str) -> bool:
    return len(value) <= _MAX_NAME and _KIND.fullmatch(value) is not None


def valid_dns_label(value: object) -> bool:
    """Whether ``value`` is a DNS label (RFC 1123), the rule of a namespace."""
    return (
        isinstance(value, str)
        and len(value) <= _MAX_NAME
        and _DNS_LABEL.fullmatch(value) is not None
    )


valid_namespace = valid_dns_label


def valid_dns_subdomain(value: object) -> bool:
    """Whether ``value`` is a DNS subdomain: 1-253 characters of dot-separated DNS labels."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= _MAX_SUBDOMAIN
        and all(valid_dns_label(label) for label in value.split("."))
    )


def _valid_prefixed(value: str, suffix_valid: Callable[[str], bool]) -> bool:
    """Whether ``value`` is ``suffix`` or ``prefix/suffix``, the prefix a DNS subdomain."""
    parts = value.split("/")
    if len(parts) == 1:
        return suffix_valid(parts[0])
    return len(parts) == 2 and valid_dns_subdomain(parts[0]) and suffix_valid(parts[1])


def _valid_version(value: str) -> bool:
    return len(value) <= _MAX_NAME and _VERSION.fullmatch(value) is not None


def valid_api_version(value: object) -> bool:
    """Whether ``value`` is ``[dns-subdomain/]version``, the version 1-63 of ``[a-zA-Z0-9]``."""
    return isinstance(value, str) and _api_version_ok(value)


@_remembered
def _api_version_ok(value: str) -> bool:
    return _valid_prefixed(value, _valid_version)


def valid_key(value: object) -> bool:
    """Whether ``value`` is a valid annotation or label key: ``[dns-subdomain/]name``."""
    return isinstance(value, str) and _key_ok(value)


@_remembered
def _key_ok(value: str) -> bool:
    return _valid_prefixed(value, valid_name)


def valid_label_value(value: object) -> bool:
    """Whether ``value`` is a valid label value: empty, or valid as a name."""
    return isinstance(value, str) and _label_value_ok(value)


@_remembered
def _label_value_ok(value: str) -> bool:
    return value == "" or valid_name(value)


def valid_tag(value: object) -> bool:
    """Whether ``value`` is a valid tag: lower case ``[a-z0-9:+#]`` in parts joined by ``-``."""
    return isinstance(value, str) and len(value) <= _MAX_NAME and _TAG.fullmatch(value) is not None


def valid_url(value: object) -> bool:
    """Whether ``value`` is a URL as Backstage's ``new URL(value)`` (the WHATWG URL standard)
    reads one: a scheme and ``:``, then no whitespace or control character. ``http``,
    ``https``, ``ws``, ``wss`` and ``ftp`` need a host; ``file`` may have an empty one;
    other schemes need none (``mailto:a@b.io``, ``urn:isbn:1``). A host holds no forbidden
    host code point (space, ``<``, ``>``, ``^``, ``|``...) and a port is digits up to 65535.
    """
    if not isinstance(value, str):
        return False
    match = _URL.fullmatch(value)
    if match is None:
        return False
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in _SPECIAL_SCHEMES:
        # Any run of slashes, either way, comes before the host.
        return _server_ok(_AUTHORITY_END.split(rest.lstrip("/\\"), maxsplit=1)[0], special=True)
    if scheme == "file":
        if rest[:2] not in _TWO_SLASHES:
            return True  # file:/path names no host
        host = _AUTHORITY_END.split(rest[2:], maxsplit=1)[0]
        return host == "" or _WINDOWS_DRIVE.fullmatch(host) is not None or _domain_ok(host)
    if not rest.startswith("//"):
        return True  # an opaque path: mailto:, urn:, tel:
    return _server_ok(_OPAQUE_AUTHORITY_END.split(rest[2:], maxsplit=1)[0], special=False)


def _server_ok(authority: str, *, special: bool) -> bool:
    """Whether ``[userinfo@]host[:port]`` has a host the URL standard accepts (a domain that
    is not empty for a special scheme) and a port of digits up to 65535."""
    host_port = authority.rpartition("@")[2]
    if host_port.startswith("["):
        host, bracket, port = host_port.partition("]")
        if not bracket or _IPV6.fullmatch(host[1:]) is None or port[:1] not in ("", ":"):
            return False
        port = port[1:]
    else:
        host, _, port = host_port.partition(":")
        if not (_domain_ok(host) if special else _FORBIDDEN_HOST.search(host) is None):
            return False
    return port == "" or (port.isascii() and port.isdigit() and int(port) <= _MAX_PORT)


def _domain_ok(host: str) -> bool:
    """Whether ``host`` is a domain the URL standard accepts: not empty, and no forbidden
    domain code point once percent-decoded."""
    try:
        decoded = unquote(host, errors="strict")
    except UnicodeDecodeError:
        return False
    return decoded != "" and _FORBIDDEN_DOMAIN.search(decoded) is None


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, with a plain ``dict`` (nearly every value) told apart
    without the abstract base class's check, which costs several times more."""
    return type(value) is dict or isinstance(value, Mapping)


def describe(entity: object) -> str:
    """A short label for an entity in an error: its name when it has one."""
    if _is_mapping(entity):
        metadata = entity.get("metadata")
        if _is_mapping(metadata) and isinstance(metadata.get("name"), str):
            return str(metadata["name"])[:200]
    return ""


def _shown(value: object) -> str:
    """``repr(value)``, cut to about 100 characters."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."


def validate(entity: object) -> None:
    """Raise :class:`EntityRejected` when ``entity`` breaks an envelope rule."""
    if not _is_mapping(entity):
        raise EntityRejected("entity", f"an entity must be a mapping, got {type(entity).__name__}")
    if not _ROOT_FIELDS.issuperset(entity):
        foreign = next(key for key in entity if key not in _ROOT_FIELDS)
        raise EntityRejected(
            "root",
            f"root field {_shown(foreign)} is not allowed; an entity has only apiVersion, "
            "kind, metadata and spec",
        )
    api_version = entity.get("apiVersion")
    if not valid_api_version(api_version):
        raise EntityRejected(
            "apiVersion",
            f"apiVersion {_shown(api_version)} must be an optional DNS subdomain and '/', "
            "then 1-63 characters of [a-zA-Z0-9]",
        )
    kind = entity.get("kind")
    if not valid_kind(kind):
        raise EntityRejected(
            "kind", f"kind {_shown(kind)} must be 1-63 letters and digits, starting with a letter"
        )
    metadata = entity.get("metadata")
    if not _is_mapping(metadata):
        raise EntityRejected("metadata", f"metadata {_shown(metadata)} must be a mapping")
    spec = entity.get("spec", _ABSENT)
    if spec is not _ABSENT and not _is_mapping(spec):
        raise EntityRejected("spec", f"spec {_shown(spec)} must be a mapping")
    _validate_metadata(metadata)


def _validate_metadata(metadata: Mapping[str, Any]) -> None:
    name = metadata.get("name")
    if not valid_name(name):
        raise EntityRejected("metadata.name", f"metadata.name {_shown(name)} must be {_NAME_RULE}")
    namespace = metadata.get("namespace", _ABSENT)
    if namespace is not _ABSENT and not valid_namespace(namespace):
        raise EntityRejected(
            "metadata.namespace",
            f"metadata.namespace {_shown(namespace)} must be a DNS label: {_DNS_LABEL_RULE}",
        )
    # Absent is fine; null is not a mapping (an empty ``labels:`` key in YAML is null).
    annotations = metadata.get("annotations", _ABSENT)
    if annotations is not _ABSENT:
        _validate_string_map("annotations", annotations, None)
    labels = metadata.get("labels", _ABSENT)
    if labels is not _ABSENT:
        _validate_string_map("labels", labels, valid_label_value)
    tags = metadata.get("tags", _ABSENT)
    if tags is not _ABSENT:
        _validate_tags(tags)
    for field in ("title", "description"):
        text = metadata.get(field, _ABSENT)
        if text is not _ABSENT and not isinstance(text, str):
            raise EntityRejected(
                f"metadata.{field}", f"metadata.{field} {_shown(text)} must be a string"
            )
    links = metadata.get("links", _ABSENT)
    if links is not _ABSENT:
        _validate_links(links)


def _validate_string_map(
    field: str, values: object, value_valid: Callable[[object], bool] | None
) -> None:
    rule = f"metadata.{field}"
    if not _is_mapping(values):
        raise EntityRejected(rule, f"{rule} {_shown(values)} must be a mapping")
    for key, value in values.items():
        if not valid_key(key):
            raise EntityRejected(rule, f"{rule} key {_shown(key)} must be {_KEY_RULE}")
        if not isinstance(value, str):
            raise EntityRejected(
                rule,
                f"{rule}[{key!r}] {_shown(value)} must be a string, not {type(value).__name__}",
            )
        if value_valid is not None and not value_valid(value):
            raise EntityRejected(
                rule, f"{rule}[{key!r}] {_shown(value)} must be empty or {_NAME_RULE}"
            )


def _validate_tags(tags: object) -> None:
    if not isinstance(tags, list | tuple):
        raise EntityRejected("metadata.tags", f"metadata.tags {_shown(tags)} must be a list")
    for index, tag in enumerate(tags):
        if not valid_tag(tag):
            raise EntityRejected(
                "metadata.tags", f"metadata.tags[{index}] {_shown(tag)} must be {_TAG_RULE}"
            )


def _validate_links(links: object) -> None:
    if not isinstance(links, list | tuple):
        raise EntityRejected("metadata.links", f"metadata.links {_shown(links)} must be a list")
    for index, link in enumerate(links):
        where = f"metadata.links[{index}]"
        if not _is_mapping(link):
            raise EntityRejected("metadata.links", f"{where} {_shown(link)} must be a mapping")
        url = link.get("url")
        if not valid_url(url):
            raise EntityRejected(
                "metadata.links",
                f"{where}.url {_shown(url)} must be {_URL_RULE}",
            )
        for field in ("title", "icon", "type"):
            value = link.get(field, _ABSENT)
            if value is not _ABSENT and not isinstance(value, str):
                raise EntityRejected(
                    "metadata.links", f"{where}.{field} {_shown(value)} must be a string"
                )


def prepare(entity: object, provider_name: str, location_key: str | None) -> PreparedEntity:
    """Validate ``entity``, annotate it with its provider and compute its ref and hash."""
    validate(entity)
    assert _is_mapping(entity)
    metadata = dict(entity["metadata"])
    annotations = dict(metadata.get("annotations") or {})
    annotations[PROVIDER_ANNOTATION] = provider_name
    metadata["annotations"] = annotations
    body = dict(entity)
    body["metadata"] = metadata
    try:
        encoded = canonical_json(body)
    except (TypeError, ValueError) as exc:
        raise EntityRejected("json", f"the entity cannot be encoded as JSON: {exc}") from None
    if location_key is not None and not isinstance(location_key, str):
        raise EntityRejected(
            "location_key", f"location_key must be a string, got {type(location_key).__name__}"
        )
    name = metadata["name"]
    return PreparedEntity(
        ref=entity_ref(body["kind"], metadata.get("namespace"), name),
        name=name,
        location_key=location_key,
        body=body,
        canonical=encoded.decode(),
        hash=hashlib.sha256(encoded).hexdigest(),
    )
