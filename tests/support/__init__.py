"""Helpers the tests share: waiting, ingestions, worker processes, services, fake sources.

Test modules import from here, never from each other or from ``conftest``.
"""
