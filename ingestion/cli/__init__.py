"""The ``ingestion`` command: see and steer providers, read the catalog, serve the API.

Every command loads the app named by ``--app MODULE[:ATTRIBUTE]`` (or ``INGESTION_APP``), the
same module the workers run with ``celery -A``. The commands live in modules by job
(:mod:`~ingestion.cli.providers`, :mod:`~ingestion.cli.catalog`, :mod:`~ingestion.cli.running`);
:mod:`~ingestion.cli.base` holds the app and its exit codes, :mod:`~ingestion.cli.output` what
it prints.
"""

# The order of these imports is the order of the commands in --help.
# isort: off
from ingestion.cli import providers, catalog, running

# isort: on
from ingestion.cli.base import EXIT_CONFIGURATION, EXIT_FAILURE, cli, exit_code, main

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_FAILURE",
    "catalog",
    "cli",
    "exit_code",
    "main",
    "providers",
    "running",
]
