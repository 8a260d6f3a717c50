"""Find the user's ``IncrementalIngestion`` from ``MODULE[:ATTRIBUTE]``, like ``celery -A``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from ingestion.app import IncrementalIngestion
from ingestion.errors import AppNotFound

#: The environment variable naming the app when ``--app`` is not given.
APP_ENV = "INGESTION_APP"


def load_ingestion(spec: str | None = None) -> IncrementalIngestion:
    """Import ``MODULE[:ATTRIBUTE]`` and return the ``IncrementalIngestion`` it defines.

    Without an attribute, the module's ``ingestion`` is used, or its only
    ``IncrementalIngestion``. A callable attribute is called with no arguments (a factory).
    """
    spec = spec or os.environ.get(APP_ENV)
    if not spec:
        raise AppNotFound(
            f"no app given: pass --app MODULE[:ATTRIBUTE] or set {APP_ENV} to the module that "
            "builds your IncrementalIngestion (the module you give celery -A)"
        )
    module_name, _, attribute = spec.partition(":")
    # Like celery -A: a module in the current directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppNotFound(
                f"cannot import the app module {module_name!r}: no module named {exc.name!r} "
                "(check the name, and that it is importable from this directory)"
            ) from None
        raise
    value: Any
    if attribute:
        try:
            value = getattr(module, attribute)
        except AttributeError:
            raise AppNotFound(f"module {module_name!r} has no attribute {attribute!r}") from None
        if callable(value) and not isinstance(value, IncrementalIngestion):
            value = value()
    else:
        value = getattr(module, "ingestion", None)
        if not isinstance(value, IncrementalIngestion):
            found = [v for v in vars(module).values() if isinstance(v, IncrementalIngestion)]
            if len(found) != 1:
                raise AppNotFound(
                    f"module {module_name!r} defines {len(found)} IncrementalIngestion objects; "
                    f"name one: {module_name}:ATTRIBUTE"
                )
            value = found[0]
    if not isinstance(value, IncrementalIngestion):
        raise AppNotFound(f"{spec!r} is a {type(value).__name__}, not an IncrementalIngestion")
    return value
