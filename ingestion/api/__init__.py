"""The admin HTTP API (see :mod:`ingestion.api.app`) and the bodies it answers with."""

from ingestion.api.app import ApiSettings, create_api
from ingestion.api.bodies import (
    ErrorRecord,
    ProviderDetail,
    ProviderSummary,
    Step,
    checkpoint,
    provider_detail,
    step_result,
)
from ingestion.api.errors import database_message
from ingestion.errors import InsecureConfiguration

__all__ = [
    "ApiSettings",
    "ErrorRecord",
    "InsecureConfiguration",
    "ProviderDetail",
    "ProviderSummary",
    "Step",
    "checkpoint",
    "create_api",
    "database_message",
    "provider_detail",
    "step_result",
]
