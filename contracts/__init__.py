"""Provider contracts: OpenAPI 3.1 operations, behaviour and scenarios, as typed data.

>>> import contracts
>>> contracts.load("cloudsway").behaviour.auth.scheme
'Bearer'
"""

from __future__ import annotations

from ._loader import FAULT_CATALOGUE, add_contracts, aliases, available, canonical, contract_dir, load
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
    LiveSpec,
    Operation,
    Option,
    Phase,
    Polling,
    ProbeSpec,
    Quirk,
    Retention,
    Scenario,
)

__all__ = [
    "FAULT_CATALOGUE",
    "Auth",
    "Behaviour",
    "Contract",
    "ContractError",
    "Duration",
    "ErrorSpec",
    "Expectation",
    "Lifecycle",
    "LiveSpec",
    "Operation",
    "Option",
    "Phase",
    "Polling",
    "ProbeSpec",
    "Quirk",
    "Retention",
    "Scenario",
    "SchemaIssue",
    "SchemaValidator",
    "add_contracts",
    "aliases",
    "available",
    "canonical",
    "contract_dir",
    "documented_statuses",
    "load",
    "request_validator",
    "response_validator",
]
