"""Forged credentials for tests that check a server refuses them."""

from __future__ import annotations


def tampered(value: str) -> str:
    """Return ``value`` with its first character replaced by a different one.

    A fixed replacement ("x" + value[1:]) would return the value itself whenever it
    already starts with "x", which for a random URL-safe token is one time in 64.
    """
    if not value:
        raise ValueError("cannot tamper with an empty value")
    return ("y" if value[0] == "x" else "x") + value[1:]
