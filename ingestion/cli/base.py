"""The ``ingestion`` command's app, its options, and how it fails: one line and an exit
status, never a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from ingestion.api import database_message
from ingestion.app import IncrementalIngestion
from ingestion.cli.output import err
from ingestion.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    IngestionError,
    ProviderConfigError,
)
from ingestion.loader import APP_ENV, load_ingestion

cli = typer.Typer(
    name="ingestion",
    help="Operate incremental ingestion: providers, cycles, errors, the catalog, the admin API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a traceback's locals could hold a secret
    add_completion=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NameArg = Annotated[str, typer.Argument(help="The provider's name.")]


class Failure(Exception):
    """An operator-facing failure: printed as one line, exit status 1 (or ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    """Stop the command with ``message`` and exit status ``code``."""
    raise Failure(message, code)


@cli.callback()
def main_options(
    ctx: typer.Context,
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            "-A",
            envvar=APP_ENV,
            help="MODULE[:ATTRIBUTE] that builds your IncrementalIngestion (as for celery -A).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log the engine.")] = False,
) -> None:
    """Operate incremental ingestion."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = app


def app_of(ctx: typer.Context) -> IncrementalIngestion:
    """The app named by ``--app``; a configuration it refuses exits with status 2."""
    return load_ingestion(ctx.obj)


def require_provider(ingestion: IncrementalIngestion, name: str) -> None:
    ingestion.registered(name)  # UnknownProvider: exit status 1


# -- reading ------------------------------------------------------------------------------


# -- entry point --------------------------------------------------------------------------


def _error(message: str) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


@contextmanager
def _failures() -> Iterator[None]:
    try:
        yield
    except Failure as exc:
        _error(str(exc))
        raise SystemExit(exc.code) from None
    except IngestionError as exc:
        _error(_describe_error(exc))
        raise SystemExit(exit_code(exc)) from None
    except SQLAlchemyError as exc:
        _error(database_message(exc))
        raise SystemExit(EXIT_FAILURE) from None


#: Exit statuses: 0 done, 1 the step failed (unknown provider, database, ...), 2 the app or
#: its configuration cannot be used.
EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2


def exit_code(exc: IngestionError) -> int:
    """The exit status of the ``ingestion`` command for an error of the engine."""
    return EXIT_CONFIGURATION if isinstance(exc, ConfigurationError) else EXIT_FAILURE


def _describe_error(exc: IngestionError) -> str:
    if isinstance(exc, DatabaseUnavailable) and isinstance(exc.__cause__, SQLAlchemyError):
        return database_message(exc.__cause__)
    if isinstance(exc, ProviderConfigError):
        return f"the app's provider configuration is invalid: {exc}"
    return str(exc)


def main() -> None:
    """Entry point of the ``ingestion`` command."""
    with _failures():
        cli(standalone_mode=True)
    sys.exit(0)
