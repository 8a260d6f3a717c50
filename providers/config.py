"""Providers from a YAML configuration file, so that common sources need no Python.

::

    providers:
      - name: acme-repos
        type: github            # http, github or files
        organization: acme
        token_env: GITHUB_TOKEN
        rest_length: 1h         # engine options, with durations like 500ms, 3s, 10m, 1d
        backoff: [1m, 5m, 30m]
      - name: inventory
        type: http
        url: https://inventory.example/api/services
        entity: {metadata: {name: "{slug}"}}
        events:                 # one rule, or a list of them (providers.http.EventRule)
          - {topic: inventory, match: {type: [created, updated]}, added: service}
          - {topic: inventory, match: {type: deleted}, removed: service}

``celery -A providers.app worker`` loads the file named by ``INGESTION_CONFIG`` (see
:mod:`providers.app`). An invalid file fails at start with a message naming the file, the
provider and the key. The engine options of an entry are :class:`ingestion.ProviderOptions`'s.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from ingestion import IncrementalIngestion, Settings
from ingestion.errors import ConfigurationError, ProviderConfigError
from ingestion.options import Duration, ProviderOptions, problem_message
from ingestion.provider import IncrementalEntityProvider
from providers.files import FilesProvider, yaml_problem
from providers.github import GitHubProvider
from providers.http import (
    EntityTemplate,
    EventRule,
    HttpProvider,
    LinkHeader,
    NextCursor,
    OffsetLimit,
    PageNumber,
    TokenAuth,
)

#: The environment variable that names the configuration file.
CONFIG_ENV = "INGESTION_CONFIG"


class ConfigError(ConfigurationError):
    """The configuration file cannot be used; the message names the file, provider and key."""


class _ProviderConfig(ProviderOptions):
    """What every provider entry has: a name, a type, and the engine options (the fields of
    :class:`ingestion.ProviderOptions`, inherited: one definition of them)."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    name: str = Field(min_length=1, max_length=255)

    def options(self) -> dict[str, Any]:
        """The engine options the entry sets, for ``add_provider``."""
        return self.model_dump(include=set(ProviderOptions.model_fields), exclude_unset=True)

    def make_provider(self, base: Path) -> IncrementalEntityProvider[Any, Any]:
        raise NotImplementedError


class HttpConfig(_ProviderConfig):
    """``type: http``: a paginated JSON API (see :class:`providers.http.HttpProvider`)."""

    type: Literal["http"]
    url: str
    items: str = ""
    pagination: Annotated[
        PageNumber | OffsetLimit | NextCursor | LinkHeader, Field(discriminator="style")
    ] = LinkHeader()
    params: dict[str, str | int | float | bool] = {}
    headers: dict[str, str] = {}
    auth: TokenAuth | None = None
    timeout: Duration = timedelta(seconds=30)
    item_url: str | None = None
    item_path: str = ""
    entity: dict[str, Any]
    api_version: str = "backstage.io/v1alpha1"
    kind: str = "Component"
    namespace: str | None = None
    make_names_valid: bool = False
    events: list[EventRule] = []

    @field_validator("events", mode="before")
    @classmethod
    def _one_rule_or_a_list(cls, value: Any) -> Any:
        """``events:`` may be one rule (a mapping) or a list of rules."""
        if isinstance(value, Mapping):
            return [value]
        if not isinstance(value, list):
            raise ValueError(
                "must be an event rule (a mapping with topic and added or removed) or a list "
                f"of them, got {value!r}"
            )
        return value

    def make_provider(self, base: Path) -> HttpProvider:
        template = EntityTemplate(
            self.entity,
            api_version=self.api_version,
            kind=self.kind,
            namespace=self.namespace,
            make_names_valid=self.make_names_valid,
        )
        return HttpProvider(
            self.name,
            self.url,
            entity=template,
            items=self.items,
            pagination=self.pagination,
            params=self.params,
            headers=self.headers,
            auth=self.auth,
            timeout=self.timeout.total_seconds(),
            item_url=self.item_url,
            item_path=self.item_path,
            events=self.events,
        )


class GitHubConfig(_ProviderConfig):
    """``type: github``: an organisation's repositories (see :mod:`providers.github`)."""

    type: Literal["github"]
    organization: str = Field(min_length=1)
    token_env: str = "GITHUB_TOKEN"
    api_url: str = "https://api.github.com"
    graphql_url: str | None = None
    per_page: int = Field(100, ge=1, le=100)
    include_archived: bool = True
    owner: str | None = None
    component_type: str = "service"
    lifecycle: str = "production"
    namespace: str | None = None
    timeout: Duration = timedelta(seconds=30)
    event_topic: str = Field("github", min_length=1)

    def make_provider(self, base: Path) -> GitHubProvider:
        return GitHubProvider(
            self.name,
            self.organization,
            token_env=self.token_env,
            api_url=self.api_url,
            graphql_url=self.graphql_url,
            per_page=self.per_page,
            include_archived=self.include_archived,
            owner=self.owner,
            component_type=self.component_type,
            lifecycle=self.lifecycle,
            namespace=self.namespace,
            timeout=self.timeout.total_seconds(),
            event_topic=self.event_topic,
        )


class FilesConfig(_ProviderConfig):
    """``type: files``: a directory of catalog files (see :mod:`providers.files`).

    A relative ``directory`` is taken from the configuration file's own folder.
    """

    type: Literal["files"]
    directory: Path
    pattern: str = "catalog-info.yaml"
    files_per_page: int = Field(50, ge=1)
    max_file_bytes: int = Field(1_000_000, ge=1)

    def make_provider(self, base: Path) -> FilesProvider:
        return FilesProvider(
            self.name,
            base / self.directory.expanduser(),
            pattern=self.pattern,
            files_per_page=self.files_per_page,
            max_file_bytes=self.max_file_bytes,
        )


ProviderConfig = Annotated[HttpConfig | GitHubConfig | FilesConfig, Field(discriminator="type")]
_TYPES: dict[str, type[_ProviderConfig]] = {
    "http": HttpConfig,
    "github": GitHubConfig,
    "files": FilesConfig,
}


class IngestionConfig(BaseModel):
    """A whole configuration file: the providers to run."""

    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderConfig] = Field(min_length=1)


class LoadedConfig:
    """A validated configuration file, ready to give its providers to an ingestion."""

    def __init__(self, path: Path, config: IngestionConfig) -> None:
        self.path = path
        self.config = config

    def add_to(self, ingestion: IncrementalIngestion) -> None:
        """Register every provider of the file, with its engine options."""
        for index, entry in enumerate(self.config.providers):
            try:
                provider = entry.make_provider(self.path.parent)
                ingestion.add_provider(provider, **entry.options())
            except ProviderConfigError as exc:
                where = f"{self.path}: provider {entry.name!r} (providers[{index}])"
                message = str(exc).removeprefix(f"provider {entry.name!r}: ")
                raise ConfigError(f"{where}: {message}") from None


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate the configuration file at ``path``; :class:`ConfigError` if invalid."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {yaml_problem(exc)}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping with a 'providers' list at the top")
    try:
        config = IngestionConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(path, raw, error) for error in exc.errors()]
        raise ConfigError("\n".join(dict.fromkeys(lines))) from None
    seen: dict[str, int] = {}
    for index, entry in enumerate(config.providers):
        if entry.name in seen:
            raise ConfigError(
                f"{path}: provider {entry.name!r} is defined twice "
                f"(providers[{seen[entry.name]}] and providers[{index}])"
            )
        seen[entry.name] = index
    return LoadedConfig(path, config)


def ingestion_from_config(
    path: str | Path, *, settings: Settings | None = None
) -> IncrementalIngestion:
    """An :class:`IncrementalIngestion` with the providers of the file at ``path``.

    Settings (database, broker, queue) come from ``settings`` or the environment, as for any
    ``IncrementalIngestion``; more providers may still be added in Python.
    """
    loaded = load_config(path)
    ingestion = IncrementalIngestion(settings=settings)
    loaded.add_to(ingestion)
    return ingestion


@cache
def configured_ingestion() -> IncrementalIngestion:
    """The ingestion of the file named by ``INGESTION_CONFIG``, built once per process."""
    path = os.environ.get(CONFIG_ENV, "").strip()
    if not path:
        raise ConfigError(
            f"{CONFIG_ENV} is not set: set it to the path of the configuration file that lists "
            "the providers, or give celery -A the module that builds your IncrementalIngestion"
        )
    return ingestion_from_config(path)


def _describe(path: Path, raw: Mapping[str, Any], error: ErrorDetails) -> str:
    """One validation error as ``<file>: provider 'x' (providers[2]), key <key>: <why>``."""
    loc = list(error["loc"])
    head = f"{path}: "
    node: Any = raw
    kind: str | None = None
    if len(loc) >= 2 and loc[0] == "providers" and isinstance(loc[1], int):
        index = loc[1]
        providers = raw.get("providers")
        node = providers[index] if isinstance(providers, list) else None
        name = node.get("name") if isinstance(node, Mapping) else None
        kind = node.get("type") if isinstance(node, Mapping) else None
        label = f"provider {name!r} (providers[{index}])" if name else f"providers[{index}]"
        head += f"{label}, "
        loc = loc[2:]
    keys: list[str] = []
    for position, part in enumerate(loc):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            keys.append(str(part))
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            keys[-1:] = [f"{keys[-1] if keys else ''}[{part}]"]
        elif position == len(loc) - 1:
            keys.append(str(part))  # a missing key
        # otherwise a union's tag (the type or style), not a key of the file
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the type or style
        keys.append(str((error.get("ctx") or {}).get("discriminator", "type")).strip("'"))
    return f"{head}key {'.'.join(keys)}: {_why(error, keys, kind)}"


def _why(error: ErrorDetails, keys: list[str], kind: str | None) -> str:
    context = error.get("ctx") or {}
    discriminator = str(context.get("discriminator", "type")).strip("'")
    if error["type"] == "missing":
        return "is required"
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        model = _TYPES.get(kind) if isinstance(kind, str) and len(keys) == 1 else None
        if model is not None:
            known = ", ".join(sorted(set(model.model_fields) - {"type"}))
            return f"is not a setting of type {kind!r}; expected one of {known}"
        if kind == "http" and len(keys) == 2 and keys[0].startswith("events"):
            known = ", ".join(f.name for f in dataclasses.fields(EventRule))
            return f"is not a setting of an event rule; expected one of {known}"
        return "is not a known key"
    if error["type"] == "union_tag_invalid":
        tag, expected = context.get("tag"), context.get("expected_tags")
        return f"unknown {discriminator} {tag!r}; expected one of {expected}"
    if error["type"] == "union_tag_not_found":
        return "is required" + (f"; one of {', '.join(_TYPES)}" if discriminator == "type" else "")
    return problem_message(error)
