"""Fault injection: real workers and beat on a throwaway Postgres and Redis, one fault at a time.

``python -m chaos`` (``make chaos``) runs every scenario of :mod:`chaos.scenarios` and writes
``docs/reliability.md``. Nothing here touches the shared servers: each run starts its own
Postgres cluster (``initdb`` in a temporary folder) and its own ``redis-server``.
"""
