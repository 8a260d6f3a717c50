"""The catalog's routes: its entities, and its change feed."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from ingestion.api.bodies import Changes, Entities, ErrorBody, change_record
from ingestion.api.params import MAX_ID, AfterRef, KindFilter, ProviderFilter, RefPath, SearchText
from ingestion.app import IncrementalIngestion
from ingestion.catalog import CatalogEntity


def catalog_router(ingestion: IncrementalIngestion) -> APIRouter:
    router = APIRouter(tags=["catalog"], responses={404: {"model": ErrorBody}})

    @router.get("/changes", response_model=Changes)
    def changes(
        after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Changes:
        """The catalog's changes after the id ``after``, oldest first: ask again with
        ``after=next_after`` to follow the feed from where you stopped."""
        items = [change_record(r) for r in ingestion.store.changes(after=after, limit=limit)]
        return Changes(items=items, next_after=items[-1].id if items else after)

    @router.get("/entities", response_model=Entities)
    def entities(
        provider: ProviderFilter = None,
        kind: KindFilter = None,
        q: SearchText = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: AfterRef = None,
    ) -> Entities:
        """Entities in ref order, ``limit`` at a time (keyset pagination with ``after``)."""
        if provider is not None:
            ingestion.registered(provider)  # UnknownProvider answers 404
        rows = ingestion.store.entities_page(
            provider=provider,
            kind=kind,
            after=after.lower() if after else None,
            limit=limit,
            contains=q or None,
        )
        items = [CatalogEntity.from_row(r) for r in rows]
        return Entities(items=items, next_after=items[-1].ref if len(items) == limit else None)

    @router.get("/entities/{ref:path}", response_model=CatalogEntity)
    def entity(ref: RefPath) -> CatalogEntity:
        """One entity by its ref, ``kind:namespace/name`` (case does not matter)."""
        found = ingestion.catalog.get(ref)
        if found is None:
            raise HTTPException(404, f"no entity {ref.lower()!r} in the catalog")
        return found

    return router
