"""``python -m ingestion.cli``: the ``ingestion`` command."""

from ingestion.cli import main

main()
