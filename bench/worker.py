"""The module ``celery -A bench.worker`` loads: the providers ``BENCH_PROVIDERS`` describes.

Only worker processes import it. A process that builds more than one app at a time sees the
engine's tasks of the first app on every other one (Celery shares tasks between apps by
name), so the benchmark driver builds none and sends its messages by task name.
"""

from bench.app import build

ingestion = build()
app = ingestion.celery_app
