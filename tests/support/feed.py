"""Reading the change feed back: replaying it must rebuild the catalog."""

from __future__ import annotations

from typing import Any

from ingestion import IncrementalIngestion


def replay(ingestion: IncrementalIngestion, *, batch: int = 250) -> dict[str, Any]:
    """The catalog the change feed describes, ref -> entity, read ``batch`` at a time from the
    start: ``added`` and ``changed`` write the entity, ``removed`` deletes the ref."""
    catalog: dict[str, Any] = {}
    after, last = 0, 0
    while True:
        rows = ingestion.store.changes(after=after, limit=batch)
        for row in rows:
            assert row["id"] > last, "the feed's ids grow"
            last = row["id"]
            if row["kind"] == "removed":
                assert catalog.pop(row["ref"], None) is not None, f"{row} removes a missing ref"
            else:
                assert (row["ref"] in catalog) == (row["kind"] == "changed"), row["ref"]
                catalog[row["ref"]] = row["entity"]
        if len(rows) < batch:
            return catalog
        after = rows[-1]["id"]


def catalog_content(ingestion: IncrementalIngestion) -> dict[str, Any]:
    """The catalog as stored, ref -> entity."""
    rows: dict[str, Any] = {}
    after = None
    while True:
        page = ingestion.store.entities_page(after=after, limit=500)
        rows.update({r["ref"]: r["entity"] for r in page})
        if len(page) < 500:
            return rows
        after = page[-1]["ref"]
