"""The routes that read and steer providers, under ``/incremental`` (Backstage's admin routes)."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as FastApiPath

from ingestion.api.bodies import (
    Bursts,
    Checkpoints,
    CycleRecord,
    Cycles,
    Deleted,
    Entities,
    ErrorBody,
    ErrorRecord,
    ErrorRules,
    Errors,
    Kept,
    ProviderDetail,
    ProviderSummary,
    Removed,
    Step,
    burst_record,
    checkpoint,
    cycle_record,
    provider_detail,
    step_result,
)
from ingestion.api.params import MAX_ID, AfterRef, ProviderName, RuleFilter
from ingestion.app import IncrementalIngestion
from ingestion.catalog import CatalogEntity
from ingestion.store import Doorbell, ErrorKind


def providers_router(ingestion: IncrementalIngestion) -> APIRouter:  # noqa: C901 - one route each
    router = APIRouter(tags=["providers"], responses={404: {"model": ErrorBody}})

    def registered(name: ProviderName) -> str:
        ingestion.registered(name)  # UnknownProvider answers 404
        return name

    Name = Annotated[str, Depends(registered)]

    @router.get("/providers", response_model=list[ProviderSummary])
    def providers() -> list[ProviderSummary]:
        """Every registered provider and where it stands."""
        return [provider_detail(ingestion, name) for name in sorted(ingestion.providers)]

    @router.get("/providers/{name}", response_model=ProviderDetail)
    def provider(name: Name) -> ProviderDetail:
        """The provider's actions, attempts, last error, cycle progress and blocked sweep."""
        return provider_detail(ingestion, name)

    @router.get("/providers/{name}/cycles", response_model=Cycles)
    def cycles(name: Name, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> Cycles:
        """The provider's cycles, newest first: counts, removals, blocked removals, duration."""
        return Cycles(items=[cycle_record(r) for r in ingestion.store.cycles(name, limit)])

    @router.get("/providers/{name}/cycles/{cycle_id}", response_model=CycleRecord)
    def cycle(name: Name, cycle_id: Annotated[int, FastApiPath(ge=1, le=MAX_ID)]) -> CycleRecord:
        """One cycle of the provider."""
        row = ingestion.store.cycle(name, cycle_id)
        if row is None:
            raise HTTPException(404, f"provider {name!r} has no cycle {cycle_id}")
        return cycle_record(row)

    @router.get("/providers/{name}/bursts", response_model=Bursts)
    def bursts(name: Name, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> Bursts:
        """The provider's bursts, newest first: outcome, pages, entities, duration, error."""
        return Bursts(items=[burst_record(r) for r in ingestion.store.bursts(name, limit)])

    def steer(name: str, step: Callable[[str], Doorbell], message: str) -> Step:
        return step_result(step(name), message)

    @router.post("/providers/{name}/trigger", response_model=Step)
    def trigger(name: Name) -> Step:
        """Run the provider's due step now (a running burst is left alone)."""
        return steer(name, ingestion.trigger, "the pending step is due now")

    @router.post("/providers/{name}/start", response_model=Step)
    def start(name: Name) -> Step:
        """End the rest, or cancel the open cycle, and begin a new cycle now."""
        return steer(name, ingestion.start, "a new cycle begins now")

    @router.post("/providers/{name}/cancel", response_model=Step)
    def cancel(name: Name) -> Step:
        """Cancel the open cycle without sweeping; the provider rests until started."""
        return steer(name, ingestion.cancel, "the open cycle is cancelled; start begins a new one")

    @router.delete("/providers/{name}", response_model=Step)
    def reset(name: Name) -> Step:
        """Purge the provider's ingestion records and begin afresh; its entities stay."""
        return steer(
            name,
            ingestion.reset,
            "ingestion records purged and a new cycle begins now; the provider's entities "
            "stay until a completed cycle sweeps them",
        )

    @router.get("/providers/{name}/checkpoints", response_model=Checkpoints)
    @router.get(
        "/providers/{name}/marks",
        response_model=Checkpoints,
        deprecated=True,
        description="The same as /checkpoints, under the name Backstage's admin API uses.",
    )
    def checkpoints(
        name: Name,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cycle: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    ) -> Checkpoints:
        """The provider's page checkpoints (the cursor after each page), newest first."""
        rows = ingestion.store.checkpoints(name, limit=limit, cycle_id=cycle)
        return Checkpoints(items=[checkpoint(r) for r in rows])

    def delete_checkpoints(name: str | None) -> Deleted:
        deleted = ingestion.store.delete_closed_checkpoints(name)
        return Deleted(deleted=deleted, message=f"deleted {deleted} checkpoints of closed cycles")

    @router.delete("/providers/{name}/checkpoints", response_model=Deleted)
    @router.delete("/providers/{name}/marks", response_model=Deleted, deprecated=True)
    def delete_provider_checkpoints(name: Name) -> Deleted:
        """Delete the checkpoints of the provider's closed cycles."""
        return delete_checkpoints(name)

    @router.post("/cleanup", response_model=Deleted)
    def cleanup() -> Deleted:
        """Delete the checkpoints of every provider's closed cycles."""
        return delete_checkpoints(None)

    def entities_page(rows: list[dict[str, Any]], limit: int) -> Entities:
        items = [CatalogEntity.from_row(r) for r in rows]
        return Entities(items=items, next_after=items[-1].ref if len(items) == limit else None)

    @router.get("/providers/{name}/held-removals", response_model=Entities)
    def held_removals(
        name: Name,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: AfterRef = None,
    ) -> Entities:
        """The entities a sweep guard holds back from removal, in ref order."""
        rows = ingestion.store.held_removals(name, after=after, limit=limit)
        return entities_page(rows, limit)

    @router.post("/providers/{name}/held-removals/approve", response_model=Removed)
    def approve_held_removals(name: Name) -> Removed:
        """Remove the held-back entities now and clear the block."""
        removed = ingestion.store.approve_held_removals(name)
        return Removed(
            removed=removed, message=f"provider {name!r}: {removed} held-back entities removed"
        )

    @router.post("/providers/{name}/held-removals/dismiss", response_model=Kept)
    def dismiss_held_removals(name: Name) -> Kept:
        """Keep the held-back entities and clear the block."""
        kept = ingestion.store.dismiss_held_removals(name)
        return Kept(kept=kept, message=f"provider {name!r}: {kept} held-back entities kept")

    @router.get("/providers/{name}/waiting-removals", response_model=Entities)
    def waiting_removals(
        name: Name,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: AfterRef = None,
    ) -> Entities:
        """Entities missing from the last completed cycle that remove_after_missed_cycles keeps."""
        options = ingestion.registered(name).options
        rows = ingestion.store.waiting_removals(name, options, after=after, limit=limit)
        return entities_page(rows, limit)

    @router.get("/providers/{name}/errors", response_model=Errors)
    def errors(
        name: Name,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_ID, description="Only records older than this id.")
        ] = None,
        kind: Annotated[list[ErrorKind] | None, Query()] = None,
        rule: RuleFilter = None,
    ) -> Errors:
        """Rejected entities, warnings and burst errors, newest first, a page at a time."""
        rows = ingestion.store.errors(name, limit=limit, before=before, kinds=kind, rule=rule)
        items = [ErrorRecord(**r) for r in rows]
        return Errors(items=items, next_before=items[-1].id if len(items) == limit else None)

    @router.get("/providers/{name}/error-rules", response_model=ErrorRules)
    def error_rules(name: Name) -> ErrorRules:
        """The rules the provider's error records name, with how many records name each."""
        return ErrorRules(rules=ingestion.store.error_rules(name))

    return router
