"""Provider contracts: OpenAPI 3.1 operations, behaviour and scenarios, as typed data.

>>> import contracts
>>> contracts.load("cloudsway").behaviour.auth.scheme
'Bearer'
"""

from __future__ import annotations

from ._loader import ALIASES, PROVIDERS, available, canonical, load
from ._schema import (
    SchemaIssue,
    SchemaValidator,
    documented_statuses,
    request_validator,
    response_validator,
)
from .model import (
    Auth,
    Behaviour,
    Contract,
    ContractError,
    Duration,
    ErrorSpec,
    Expectation,
    Lifecycle,
    Operation,
    Option,
    Phase,
    Polling,
    Quirk,
    Retention,
    Scenario,
)

__all__ = [
    "ALIASES",
    "PROVIDERS",
    "Auth",
    "Behaviour",
    "Contract",
    "ContractError",
    "Duration",
    "ErrorSpec",
    "Expectation",
    "Lifecycle",
    "Operation",
    "Option",
    "Phase",
    "Polling",
    "Quirk",
    "Retention",
    "Scenario",
    "SchemaIssue",
    "SchemaValidator",
    "available",
    "canonical",
    "documented_statuses",
    "load",
    "request_validator",
    "response_validator",
]
