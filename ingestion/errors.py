"""Every error the engine raises, under one root: :class:`IngestionError`.

::

    IngestionError
    ├── ConfigurationError          a setting, an option or a file cannot be used
    │   ├── ProviderConfigError     a provider or one of its engine options
    │   ├── AppNotFound             ``--app``/``INGESTION_APP`` names no IncrementalIngestion
    │   └── InsecureConfiguration   the admin API without a usable token
    ├── UnknownProvider             no provider of that name
    ├── ProviderError               a provider misbehaved or its source failed; the burst fails
    │   └── SourceRefused           a refusal retrying cannot fix; the provider is parked
    ├── EntityRejected              one entity breaks an envelope rule; the rest of its page commits
    ├── EventRejected               a provider cannot apply an event; it is recorded as rejected
    ├── LeaseLost                   this worker no longer holds the step or the lease it ran under
    ├── DatabaseUnavailable         the database did not answer; the step is retried when it does
    └── RetryAfter                  the source asks to wait (a rate limit); no backoff step spent

Operator surfaces map them to messages and exit codes (see :mod:`ingestion.cli`).
"""

from __future__ import annotations


class IngestionError(Exception):
    """The root of every error the engine raises on purpose."""


class ConfigurationError(IngestionError):
    """A setting, an option or a configuration file cannot be used; the message says where."""


class ProviderConfigError(ConfigurationError):
    """A provider or one of its options cannot be accepted."""


class AppNotFound(ConfigurationError):
    """The app could not be loaded; the message says what to change."""


class InsecureConfiguration(ConfigurationError):
    """The API was asked to start without a usable token and without the insecure flag."""


class UnknownProvider(IngestionError):
    """No provider of that name is registered (in this app, or in the database)."""


class ProviderError(IngestionError):
    """A provider misbehaved or its source failed; the message says what and where."""


class SourceRefused(ProviderError):
    """The source refused in a way that retrying cannot fix (credentials refused, an
    organisation that does not exist or is hidden from the token).

    The burst fails and the provider is *parked*: no backoff, no new cycle, the error visible
    in its status, until an operator starts it again. The message says what to change.
    """


class EntityRejected(IngestionError):
    """An entity breaks an envelope rule: ``rule`` names the rule, the message the field."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class EventRejected(IngestionError):
    """Raised by a provider's ``on_event`` for an event it recognises but cannot apply (a
    payload without the fields it needs); the message says what is missing. The event is
    recorded as rejected for that provider; the provider's next cycle corrects the catalog."""


class LeaseLost(IngestionError):
    """This worker no longer holds what it was running under: another step replaced its
    burst's, or the event applier's lease expired (another worker may hold it now)."""


class DatabaseUnavailable(IngestionError):
    """The database could not be reached or dropped the connection; the message says why.

    A burst that meets it records it (with its real cause) once the database answers again,
    and its step runs again soon after, without spending a backoff step.
    """


class RetryAfter(IngestionError):
    """Raised by ``around()``, ``next()`` or ``check_removals()`` when the source asks to wait,
    as a rate limit does.

    The burst stops (pages and batches of removal checks already returned stay committed) and
    the cycle resumes after ``seconds`` with the same page, or the same batch of candidates;
    unlike a failure it spends no backoff step.
    """

    def __init__(self, seconds: float, reason: str) -> None:
        self.seconds = seconds if seconds > 0 else 0.0  # NaN and negative mean "now"
        self.reason = reason
        super().__init__(f"{reason} (retry after {self.seconds:g}s)")


__all__ = [
    "AppNotFound",
    "ConfigurationError",
    "DatabaseUnavailable",
    "EntityRejected",
    "EventRejected",
    "IngestionError",
    "InsecureConfiguration",
    "LeaseLost",
    "ProviderConfigError",
    "ProviderError",
    "RetryAfter",
    "SourceRefused",
    "UnknownProvider",
]
