"""The array literals a page's columns travel to Postgres in read back as the values sent."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ingestion.store import Store
from ingestion.store.dialects import bigint_array, text_array

ODD = ['say "hi"', "back\\slash", '\\"', "a,b", "NULL", "null", "", " spaced ", "{x}", "é ✓", None]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "values",
    [
        [],
        ["component:default/a", "component:default/b"],  # nothing to escape: the common page
        ODD,
        [None],
        ["", ""],
    ],
)
def test_text_arrays_read_back_as_sent(pg_url: str, values: list[str | None]) -> None:
    store = Store(pg_url)
    try:
        with store.db.read() as conn:
            read = conn.execute(
                text("SELECT CAST(:values AS text[])"), {"values": text_array(values)}
            ).scalar_one()
    finally:
        store.dispose()
    assert read == values


@pytest.mark.timeout(30)
def test_bigint_arrays_read_back_as_sent(pg_url: str) -> None:
    values = [1, None, 2**62, 0]
    store = Store(pg_url)
    try:
        with store.db.read() as conn:
            read = conn.execute(
                text("SELECT CAST(:values AS bigint[])"), {"values": bigint_array(values)}
            ).scalar_one()
    finally:
        store.dispose()
    assert read == values
