"""Reading the catalog: the entities the providers keep, as stored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ingestion.store import Store


class CatalogEntity(BaseModel):
    """One entity of the catalog as stored: the one description of a stored entity, used by
    Python callers, the admin API and the command line alike."""

    model_config = ConfigDict(frozen=True)

    ref: str = Field(description="kind:namespace/name, lower-case.")
    provider: str = Field(description="The provider that owns the entity.")
    location_key: str | None
    entity: dict[str, Any] = Field(description="The entity, with the provider annotation.")
    hash: str = Field(description="SHA-256 of the entity's canonical JSON.")
    created_at: datetime
    updated_at: datetime = Field(description="When the content last changed.")
    mark_cycle: int | None = Field(
        None, description="The last cycle that saw the entity (its mark)."
    )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CatalogEntity:
        return cls.model_validate(row)


class Catalog:
    """Read access to the catalog of current entities."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, ref: str) -> CatalogEntity | None:
        """The entity ``kind:namespace/name`` (case does not matter), or ``None``."""
        row = self._store.entity(ref)
        return None if row is None else CatalogEntity.from_row(row)

    def pages(
        self, provider: str | None = None, *, page_size: int = 500, kind: str | None = None
    ) -> Iterator[list[CatalogEntity]]:
        """Entities in ref order, ``page_size`` at a time: memory stays flat."""
        after: str | None = None
        while True:
            rows = self._store.entities_page(
                provider=provider, kind=kind, after=after, limit=page_size
            )
            if not rows:
                return
            yield [CatalogEntity.from_row(r) for r in rows]
            after = rows[-1]["ref"]

    def iter(
        self, provider: str | None = None, *, page_size: int = 500, kind: str | None = None
    ) -> Iterator[CatalogEntity]:
        """Every entity (of one provider, or of one kind), read a page at a time."""
        for page in self.pages(provider, page_size=page_size, kind=kind):
            yield from page

    def refs(self, provider: str | None = None) -> Iterator[str]:
        for entity in self.iter(provider):
            yield entity.ref

    def count(self, provider: str | None = None) -> int:
        return self._store.count_entities(provider)
