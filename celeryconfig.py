"""Celery settings of an ingestion deployment, read from the environment.

``IncrementalIngestion`` applies these settings to its own Celery app, so nothing needs this
module to run. It is here for tools that take a Celery configuration module, and as the one
place to read what the engine asks of Celery and why (see ``ingestion.settings.celery_config``):

- ``task_acks_late`` and ``task_reject_on_worker_lost``: a burst is acknowledged when it ends;
  a worker lost mid-burst puts its message back;
- ``worker_prefetch_multiplier = 1``: a worker holds one burst at a time, the others wait on
  the queue for any replica;
- task events from the workers, for Flower (no task-sent event: one broker command less per
  burst; none for the reconciler); JSON only; retry the broker connection at start-up;
- ``worker_cancel_long_running_tasks_on_connection_loss``: a burst whose broker connection
  dropped is cancelled, not run twice;
- the bursts on one named queue (``INGESTION_QUEUE``, default ``ingestion``); the reconciler and
  the operator tasks on a control queue (``INGESTION_CONTROL_QUEUE``, ``<queue>.control``), so a
  backlog of bursts never delays or expires them; a worker consumes both by default;
- on Redis, ``visibility_timeout`` (``INGESTION_VISIBILITY_TIMEOUT``); on RabbitMQ,
  publisher confirms (``confirm_publish``), so a send the broker refused is never taken as sent;
- the reconciler on Celery beat every ``INGESTION_RECONCILE_INTERVAL`` seconds.
"""

from ingestion.settings import Settings, celery_config

globals().update(celery_config(Settings()))
