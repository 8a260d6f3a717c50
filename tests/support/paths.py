"""Where the project is, and the local servers the tests use (overridable by environment)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PG_ADMIN_DSN = os.environ.get(
    "TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
PG_HOST = os.environ.get("TEST_PG_HOST", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def unique(prefix: str) -> str:
    """``prefix`` with a random suffix: a queue or a provider name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
