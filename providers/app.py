"""``celery -A providers.app``: the app of the configuration file named by ``INGESTION_CONFIG``.

::

    INGESTION_CONFIG=ingestion.yaml celery -A providers.app worker --loglevel=INFO
    INGESTION_CONFIG=ingestion.yaml celery -A providers.app beat
    INGESTION_CONFIG=ingestion.yaml ingestion --app providers.app status

The file is read when the app is first asked for (``app``, ``celery`` or ``ingestion``), once per
process; an invalid file stops the command with a line per problem.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``app`` and ``celery``: the Celery app; ``ingestion``: the IncrementalIngestion."""
    if name in ("app", "celery", "ingestion"):
        from providers.config import configured_ingestion

        configured = configured_ingestion()
        return configured if name == "ingestion" else configured.celery_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
