"""pytest plugin: mocks of every provider as fixtures, failing a test on contract deviations.

Fixtures: one per provider, named in its contract (``cloudsway_mock``, ``acedata_mock``,
``fal_mock``, ``yunyx_mock``, ``dify_mock``, and one for each provider of ``IMAGEGEN_CONTRACTS`` or
``--imagegen-contracts``), reset per test; ``imagegen_mock`` (factory by provider id), ``imagegen_respx``
(in-process, under the real hostnames), ``imagegen_mocks`` (the session's servers).
Marker: ``@pytest.mark.imagegen(scenario=, faults=[...], time_scale=, clock=, lifecycle=,
options={...}, api_keys=[...], allow_deviations=False | True | [rule ids])``. A fixture's mock
accepts any well-formed key, as ``serve`` does, unless ``api_keys`` pins some. A marker that names
an unknown scenario, fault or argument is a usage error, listing what is valid.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockServer, mock_router

from ._pytest_support import (
    MARKER_KEYS,
    LiveProvider,
    MockConfig,
    MockHub,
    ProviderMock,
    allowed_rules,
    at_or_above,
    format_deviations,
)
from .rules._targets import live_target


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("imagegen-conformance", "image-generation provider mocks")
    group.addoption("--imagegen-live", action="store_true", default=False,
                    help="point the provider fixtures at the live endpoints (credentials from env)")
    group.addoption("--imagegen-fail-on", default="error", metavar="SEVERITY",
                    help="fail a test on deviations at or above this severity (default: error)")
    group.addoption("--imagegen-contracts", action="append", default=[], metavar="DIR",
                    help="load more provider contracts from DIR (as IMAGEGEN_CONTRACTS does); repeatable")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "imagegen(scenario=None, faults=(), time_scale=None, clock=None, lifecycle=None, "
        "options=None, api_keys=(), allow_deviations=False): set up the provider mocks for this "
        "test (allow_deviations: True, or the rule ids a negative test means to break)",
    )
    try:
        if config.getoption("--imagegen-contracts"):
            contracts.add_contracts(*config.getoption("--imagegen-contracts"))
        providers = contracts.available()
        fixtures = {contracts.load(p).behaviour.fixture: _provider_fixture(p) for p in providers}
    except contracts.ContractError as exc:
        raise pytest.UsageError(f"imagegen-conformance: {exc}") from None
    # One fixture per provider, generated from the contracts: a plugin object of fixtures.
    holder = types.ModuleType("imagegen_conformance_provider_fixtures")
    for name, fixture in fixtures.items():
        setattr(holder, name, fixture)
    config.pluginmanager.register(holder, "imagegen-conformance-providers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A marker naming an unknown argument, scenario or fault stops the run as a usage error."""
    fixtures = {contracts.load(p).behaviour.fixture: p for p in contracts.available()}
    for item in items:
        marker = item.get_closest_marker("imagegen")
        if marker is None:
            continue
        problem = _marker_problem(dict(marker.kwargs), [
            p for name, p in fixtures.items() if name in getattr(item, "fixturenames", ())
        ])
        if problem:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.imagegen: {problem}")


def _marker_problem(kwargs: dict[str, Any], providers: list[str]) -> str | None:
    import difflib

    from imagegen_conformance.mocks.engine import FaultSpec

    for key in kwargs:
        if key not in MARKER_KEYS:
            close = difflib.get_close_matches(key, MARKER_KEYS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            return f"unknown argument {key!r}.{hint} Valid: {', '.join(MARKER_KEYS)}"
    scenario = kwargs.get("scenario")
    if scenario and providers:
        for provider in providers:
            known = [s.id for s in contracts.load(provider).scenarios]
            if scenario not in known:
                close = difflib.get_close_matches(str(scenario), known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                return (f"{provider} has no scenario {scenario!r}.{hint} "
                        f"Valid scenarios of {provider}: {', '.join(known)}")
    elif scenario and not any(
        scenario in [s.id for s in contracts.load(p).scenarios] for p in contracts.available()
    ):  # only the factory is used: some provider must have it
        return f"no provider has a scenario {scenario!r} (see `imagegen-conformance scenarios -p ID`)"
    faults = kwargs.get("faults") or ()
    for spec in [faults] if isinstance(faults, str) else faults:
        try:
            FaultSpec.parse(spec)
        except ValueError as exc:
            return f"faults: {exc}"
    return None


@pytest.fixture(scope="session")
def imagegen_mocks() -> Iterator[MockHub]:
    """The session's mock servers, one per provider and configuration, started on first use."""
    hub = MockHub()
    yield hub
    hub.close()


def _marker(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("imagegen")
    return dict(marker.kwargs) if marker else {}


@pytest.fixture
def imagegen_mock(
    request: pytest.FixtureRequest, imagegen_mocks: MockHub
) -> Callable[[str], ProviderMock | LiveProvider]:
    """Factory: ``imagegen_mock("fal")`` gives that provider's mock, reset for this test."""

    def get(provider: str) -> ProviderMock | LiveProvider:
        name = contracts.canonical(provider)
        settings = _marker(request)
        if request.config.getoption("--imagegen-live"):
            target = live_target(name)
            if target is None:
                pytest.skip(f"--imagegen-live: the {name} contract names no live endpoint")
            missing = target.missing()
            if missing:
                pytest.skip(f"--imagegen-live: {name} needs {', '.join(missing)} in the environment")
            return LiveProvider(name, target)
        problem = _marker_problem(settings, [name])
        if problem:  # the factory was asked for a provider collection could not know of
            pytest.fail(f"@pytest.mark.imagegen: {problem}", pytrace=False)
        config = MockConfig.from_marker(name, settings)
        check, allowed = allowed_rules(settings.get("allow_deviations", False))
        handle = ProviderMock(name, imagegen_mocks.get(config), config, check_deviations=check,
                              allowed=allowed)
        faults = list(settings.get("faults") or ())
        if settings.get("scenario"):
            faults += contracts.load(name).scenario(settings["scenario"]).faults
        handle.reset(faults)
        request.node.stash.setdefault(_HANDLES, []).append(handle)
        return handle

    return get


_HANDLES = pytest.StashKey[list[ProviderMock]]()


def _provider_fixture(provider: str) -> Any:
    name = contracts.load(provider).behaviour.fixture

    def fixture(imagegen_mock: Callable[[str], ProviderMock | LiveProvider]) -> Any:
        return imagegen_mock(provider)

    fixture.__name__ = name
    fixture.__doc__ = f"The {provider} mock (or live endpoint with --imagegen-live), reset per test."
    return pytest.fixture(name=name)(fixture)


@pytest.fixture
def imagegen_respx() -> Iterator[Callable[..., MockServer]]:
    """Factory: ``imagegen_respx("fal")`` mounts that mock in-process under the real hostnames."""
    routers: list[Any] = []

    def mount(provider: str, **kwargs: Any) -> MockServer:
        server = MockServer(provider, **kwargs)
        router = mock_router(server)
        router.start()
        routers.append(router)
        return server

    yield mount
    for router in reversed(routers):
        router.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield  # a test that already failed keeps its own failure
    threshold = item.config.getoption("--imagegen-fail-on")
    for handle in item.stash.get(_HANDLES, []):
        server = handle.server
        if server.errors:
            pytest.fail(f"the {handle.provider} mock crashed:\n" + "\n".join(server.errors),
                        pytrace=False)
        if handle.check_deviations:
            found = [d for d in at_or_above(handle.deviations(), threshold)
                     if d.rule not in handle.allowed]
            if found:
                pytest.fail(format_deviations(handle.provider, found, handle.journal()), pytrace=False)
    return result
