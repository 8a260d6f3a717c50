"""Checking what a provider returned before anything is written: pages and removal checks.

Invalid entities become error records of their page and the rest of the page goes on; a result
that breaks the interface fails the burst with a message that says what and where.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ingestion.entities import PreparedEntity, describe, prepare
from ingestion.errors import EntityRejected, ProviderError
from ingestion.provider import (
    DeferredEntity,
    EntityIteratorResult,
    Rejection,
    RemovalCandidate,
    RemovalCheck,
)
from ingestion.store import CheckBatch, Page, Problem


class ContractBroken(ProviderError):
    """A provider broke the interface (a result that is not a page, a cursor JSON cannot
    encode, an ``around()`` that never calls ``burst``); the message says where.

    ``problems``: the page's rejected entities, found before the page as a whole failed; they
    are recorded with the failure, under the page's number.
    """

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def prepare_page(
    provider_name: str, result: object, sequence: int, *, where: str | None = None
) -> Page:
    """Check what ``next()`` returned and turn it into a page ready to commit.

    Invalid entities become error records; a result that is not a page, or a cursor JSON cannot
    encode, fails the burst.
    """
    where = where or f"provider {provider_name!r}, page {sequence}"
    if not isinstance(result, EntityIteratorResult):
        raise ContractBroken(
            f"{where}: next() returned {type(result).__name__}, expected EntityIteratorResult"
        )
    if not isinstance(result.done, bool):
        raise ContractBroken(f"{where}: done must be true or false, got {result.done!r}")
    rejected: list[Problem] = []
    warnings: list[Problem] = []
    prepared: dict[str, PreparedEntity] = {}
    for position, item in enumerate(result.entities or ()):
        if not isinstance(item, DeferredEntity):
            rejected.append(
                Problem(
                    f"#{position}",
                    "deferred",
                    f"{where}, entity #{position}: expected DeferredEntity, "
                    f"got {type(item).__name__}",
                )
            )
            continue
        try:
            entity = prepare(item.entity, provider_name, item.location_key)
        except EntityRejected as exc:
            label = describe(item.entity) or f"#{position}"
            rejected.append(
                Problem(label, exc.rule, f"{where}, entity #{position} ({label}): {exc.message}")
            )
            continue
        if entity.ref in prepared:
            del prepared[entity.ref]  # keep the last one, in its own position
            warnings.append(
                Problem(
                    entity.name,
                    "duplicate",
                    f"{where}: {entity.ref} appears more than once in the page; the last one wins",
                    entity.ref,
                )
            )
        prepared[entity.ref] = entity
    for position, rejection in enumerate(result.rejections or ()):
        if not isinstance(rejection, Rejection):
            rejected.append(
                Problem(
                    f"rejection #{position}",
                    "rejection",
                    f"{where}, rejection #{position}: expected Rejection, "
                    f"got {type(rejection).__name__}",
                )
            )
            continue
        rejected.append(
            Problem(
                rejection.subject[:500],
                rejection.rule[:64],
                f"{where}, {rejection.subject}: {rejection.message}",
            )
        )
    try:
        cursor = json.dumps(result.cursor, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ContractBroken(
            f"{where}: next() returned a cursor of type {type(result.cursor).__name__} that "
            f"JSON cannot encode ({exc}); a cursor must be made of JSON values",
            rejected,
        ) from None
    kept = [
        r.location_key
        for r in result.rejections or ()
        if isinstance(r, Rejection) and isinstance(r.location_key, str)
    ]
    return Page(list(prepared.values()), cursor, result.done, rejected, warnings, kept)


def prepare_check(
    provider_name: str, result: object, candidates: Sequence[RemovalCandidate], batch: int
) -> CheckBatch:
    """Check what ``check_removals()`` returned and turn it into a batch ready to commit.

    Refs in ``gone`` that were not asked about are ignored; present entities are validated as
    a page's are.
    """
    where = f"provider {provider_name!r}, removal checks, batch {batch}"
    if not isinstance(result, RemovalCheck):
        raise ContractBroken(
            f"{where}: check_removals() returned {type(result).__name__}, expected RemovalCheck"
        )
    if isinstance(result.gone, str) or not all(isinstance(ref, str) for ref in result.gone):
        raise ContractBroken(f"{where}: gone must be a list of refs (strings)")
    asked = [c.ref for c in candidates]
    gone = {ref.lower() for ref in result.gone} & set(asked)
    present = prepare_page(
        provider_name,
        EntityIteratorResult(done=False, entities=tuple(result.present or ())),
        batch,
        where=where,
    )
    return CheckBatch(asked, gone - {e.ref for e in present.entities}, present)


__all__ = ["ContractBroken", "prepare_check", "prepare_page"]
