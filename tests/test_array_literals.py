"""The array literals a page's columns travel to Postgres in read back as the values sent."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from ingestion.store import Store
from ingestion.store.dialects import bigint_array, text_array

ODD = ['say "hi"', "back\\slash", '\\"', "a,b", "NULL", "null", "", " spaced ", "{x}", "é ✓", None]


def read_back(url: str, literal: str, array_type: str) -> Any:
    """What Postgres reads from ``literal`` cast to ``array_type``."""
    store = Store(url)
    try:
        with store.db.read() as conn:
            return conn.execute(
                text(f"SELECT CAST(:values AS {array_type})"), {"values": literal}
            ).scalar_one()
    finally:
        store.dispose()


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
    assert read_back(pg_url, text_array(values), "text[]") == values


@pytest.mark.timeout(30)
def test_bigint_arrays_read_back_as_sent(pg_url: str) -> None:
    values = [1, None, 2**62, 0]
    assert read_back(pg_url, bigint_array(values), "bigint[]") == values
