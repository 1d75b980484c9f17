from __future__ import annotations

import importlib
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from imagegen_conformance import contracts
from imagegen_conformance.contracts import ContractError, ErrorSpec

from ._http import MockRequest, MockResponse

if TYPE_CHECKING:
    from ._body import Body
    from ._server import Call, MockServer

__all__ = ["Provider", "Route", "provider_class", "route"]

Handler = Callable[[Any, MockRequest, "Call"], Awaitable[MockResponse]]
F = TypeVar("F", bound=Callable[..., Any])
_PARAM = re.compile(r"\{(\w+)(?::([^}]+))?\}")


@dataclass(frozen=True)
class Route:
    """One provider route: ``{name}`` matches a path segment, ``{name:REGEX}`` a regex."""

    method: str
    pattern: str
    handler: str
    operation: str | None
    role: str
    auth: bool
    regex: re.Pattern[str]

    @classmethod
    def compile(
        cls, method: str, pattern: str, handler: str, operation: str | None, role: str, auth: bool
    ) -> Route:
        regex, pos = "", 0
        for m in _PARAM.finditer(pattern):
            regex += re.escape(pattern[pos : m.start()])
            regex += f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})"
            pos = m.end()
        regex += re.escape(pattern[pos:])
        return cls(method.upper(), pattern, handler, operation, role, auth, re.compile(regex + r"\Z"))


def route(
    method: str, pattern: str, *, operation: str | None = None, role: str = "api", auth: bool = True
) -> Callable[[F], F]:
    """Declare a provider method as the handler of ``method pattern``.

    ``operation`` is the contract's operationId (faults and the harness select by it);
    ``role`` names which of the provider's hosts serves it; ``auth`` asks the engine to
    check the contract's auth scheme before the handler runs.
    """

    def mark(func: F) -> F:
        routes = list(getattr(func, "__mock_routes__", ()))
        routes.append((method, pattern, operation, role, auth))
        func.__mock_routes__ = routes  # type: ignore[attr-defined]
        return func

    return mark


class Provider(ABC):
    """Base of every provider simulator. Subclasses declare routes and their error envelope.

    Everything shared lives in the engine; a provider module holds what is particular to
    its API: validation, bodies, the error envelope.
    """

    #: The provider id: its contract folder's name (a subclass serving another contract gets that id).
    id: str
    #: Where the engine serves signed image links for this provider (None: the provider serves
    #: its own file routes, as Dify and yunyx do).
    image_prefix: ClassVar[str | None] = "/images/"
    #: Whether every worker can answer for this provider from a shared store (``--store
    #: redis://``): its tasks' data is JSON and it keeps no per-process state a poll needs.
    shareable: ClassVar[bool] = True

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.contract = server.contract
        self.id = server.contract.provider

    @classmethod
    def routes(cls) -> list[Route]:
        found: list[Route] = []
        for name in dir(cls):
            func = getattr(cls, name, None)
            for method, pattern, operation, role, auth in getattr(func, "__mock_routes__", ()):
                found.append(Route.compile(method, pattern, name, operation, role, auth))
        # Longer literal prefixes first, so /requests/{id}/status wins over /requests/{id}.
        found.sort(key=lambda r: -len(_PARAM.sub("", r.pattern)))
        return found

    def option(self, name: str) -> str:
        return self.server.option(name)

    def setting(self, key: str) -> Any:
        """A provider-specific value of ``behaviour.yaml``: the alias's own when the mock was
        started under an alias whose section sets ``key`` (``MockServer("siliconflow")``)."""
        if key in self.server.variant:
            return self.server.variant[key]
        return self.contract.behaviour.raw[key]

    def error_spec(self, status: int) -> ErrorSpec:
        own = (self.server.variant.get("errors") or {}).get(status)
        if own is not None:
            return ErrorSpec(status, own.get("code"), str(own.get("message", "")),
                             str(own.get("meaning", "")))
        spec = self.contract.behaviour.errors.get(status)
        if spec is None:
            return ErrorSpec(status, None, f"HTTP {status}", "")
        return spec

    # --- the provider's own answers; override what differs -------------------------------

    @abstractmethod
    def error(
        self,
        request: MockRequest,
        status: int,
        code: str | int | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> MockResponse:
        """An error in the provider's envelope. Every provider defines its own."""

    def anonymous_allowed(self, request: MockRequest, operation: str) -> bool:
        """May ``request`` go without credentials? (A key that is sent is still checked.)

        The default reads the contract: an operation whose OpenAPI ``security`` lists the
        anonymous alternative ``{}`` takes requests without a key (fal's public models).
        """
        spec = self.contract.operation(operation).spec
        security = spec.get("security", self.contract.openapi.get("security"))
        return bool(security) and any(not requirement for requirement in security)

    def auth_error(self, request: MockRequest, reason: str) -> MockResponse:
        """``reason`` is "missing", "scheme" or "invalid"."""
        return self.error(request, 401)

    def not_found(self, request: MockRequest) -> MockResponse:
        return self.error(request, 404)

    def method_not_allowed(self, request: MockRequest, allowed: list[str]) -> MockResponse:
        """A known path asked with a method it does not take.

        Most providers answer these as an unknown path; one that answers 405 overrides this.
        """
        return self.not_found(request)

    def options(self, request: MockRequest, allowed: list[str]) -> MockResponse:
        """OPTIONS on a known path (``allowed``: its methods). A provider whose framework answers
        OPTIONS itself overrides this; by default it is one more method the path does not take."""
        return self.method_not_allowed(request, allowed)

    def too_large(self, request: MockRequest, limit: int) -> MockResponse:
        return self.error(request, 413, message=f"Request body exceeds {limit} bytes.")

    def request_timeout(self, request: MockRequest) -> MockResponse:
        """The body did not arrive in time (the adapter closes the connection after this)."""
        return self.error(request, 408, message="The request body did not arrive in time.")

    def rate_limited(self, request: MockRequest, retry_after: float) -> MockResponse:
        return self.error(request, 429, headers={"Retry-After": _retry_after(retry_after)})

    def overloaded(self, request: MockRequest) -> MockResponse:
        """The task store is full of live tasks."""
        return self.error(request, 503)

    def malformed(self, request: MockRequest) -> MockResponse:
        return MockResponse.raw(b'{"status": "succ', 200, "application/json")

    # --- bodies: the engine parses and validates; these say what the provider makes of it ---

    def normalise(self, operation: str, data: dict[str, Any]) -> dict[str, Any]:
        """The JSON body as the provider reads it, before the contract's schema checks it
        (a spelling it also accepts, a lax type). ``data`` is a copy; change it freely."""
        return data

    def refuse(self, request: MockRequest, body: Body) -> MockResponse | None:
        """The provider's answer to a body it does not accept, or None to run the handler.

        Called for every route whose operation takes a body, after the engine parsed it and
        checked it against the contract (``body.error``, ``body.issues``). The default is a
        400 naming the first problem; providers override it with their own words.
        """
        if body.error is not None:
            return self.error(request, 400, message=str(body.error))
        if body.issues:
            issue = body.issues[0]
            return self.error(request, 400, message=f"{issue.path.removeprefix('$.')}: {issue.message}")
        return None

    def link_lifetime(self) -> float | None:
        """Provider seconds an image or file link stays valid (None: it never expires).

        The contract's ``retention.image_url``; a provider whose own setting decides it
        (Dify's FILES_ACCESS_TIMEOUT) overrides this. Expired links are computed from it.
        """
        return self.contract.behaviour.retention.image_url

    def describe_task(self, task: Any) -> dict[str, Any]:
        """What the admin API shows of a task beyond its timeline."""
        return {k: v for k, v in task.data.items() if isinstance(v, str | int | float | bool)}

    def task_ids(self, request: MockRequest, route: Route) -> Iterable[str] | None:
        """The ids of the tasks a request refers to, or None when it lists every task.

        A shared store (``--store redis://``) loads these before the handler runs. The default
        is the value of every path parameter whose name ends in ``id`` (``{task_id}``,
        ``{request_id}``); a provider whose ids travel in the body says so here.
        """
        return [value for name, value in request.params.items() if name.endswith("id")]

    def shelf_keys(self, request: MockRequest, route: Route) -> Iterable[tuple[str, str]]:
        """(shelf name, key) of the records a request reads (see :meth:`MockServer.shelf`).

        A shared store loads them before :meth:`task_ids` is asked, so a task found through a
        record (Dify's stop by task id) can be named there. Default: none.
        """
        return ()

    def encode_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """A task's ``data`` as JSON for a shared store (an object it holds as a reference)."""
        return data

    def decode_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """The reverse of :meth:`encode_data`, in the worker that loads the task."""
        return data

    def on_ended(self, task: Any) -> None:  # noqa: B027 - optional hook
        """Another worker ended ``task`` early (a stop, a cancel): wake what waits on it here."""

    def on_rescheduled(self, task: Any) -> None:  # noqa: B027 - optional hook
        """Another worker moved ``task``'s timeline (fal's line after a cancel): re-arm what
        waits on its end here."""

    def on_secret(self) -> None:  # noqa: B027 - optional hook
        """The server's signing secret is set or changed (a shared store's key): rebuild what
        the provider derives from ``server.secret`` (fal's webhook key pair)."""

    def on_reset(self) -> None:  # noqa: B027 - optional hook; most providers keep no extra state
        """Forget provider-level state beyond tasks (queues, uploads)."""


def _retry_after(seconds: float) -> str:
    whole = int(seconds)
    return str(whole if whole == seconds else whole + 1)


def provider_class(provider: str) -> type[Provider]:
    """The simulator class a provider's contract names (``mock: "module:Class"``).

    A module that is not importable as it is is looked for beside the contract folders
    (a user's ``IMAGEGEN_CONTRACTS`` directory may hold both).
    """
    contract = contracts.load(provider)
    spec = contract.behaviour.mock
    where = f"{contract.folder}/behaviour.yaml: mock"
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        root = str(PurePath(contract.folder).parent)
        if exc.name is None or not module_name.startswith(exc.name) or root in sys.path:
            raise ContractError(f"{where}: cannot import {module_name!r}: {exc}") from None
        sys.path.append(root)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as again:
            raise ContractError(f"{where}: cannot import {module_name!r}: {again}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ContractError(f"{where}: {spec} is not a Provider subclass")
    return cls
