"""A base for Hypothesis state machines over a provider's mock, in process, under a manual clock.

Subclass it, name the provider, add rules that drive the API, and record each observed state
with :meth:`MockMachine.observe`; the base checks every transition against the contract's
lifecycle, that terminal states stay terminal, and that the mock never crashed::

    class Cloudsway(MockMachine):
        provider = "cloudsway"

        @rule(target=MockMachine.keys, prompt=st.text(min_size=1))
        def create(self, prompt):
            r = self.call("POST", "/v2/ai/e/images/generations", json={"prompts": prompt},
                          headers={"Authorization": "Bearer k"})
            return r.json_body()["taskId"]

    TestCloudsway = Cloudsway.TestCase
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, ClassVar, TypeVar

from imagegen_conformance import missing_extra

try:
    from hypothesis import strategies as st
    from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
except ImportError as exc:  # it comes with the [check] extra, not with the core install
    raise missing_extra(__name__, "hypothesis", exc) from exc

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockResponse, MockServer

__all__ = ["MockMachine"]

T = TypeVar("T")


class MockMachine(RuleBasedStateMachine):
    """Drives one provider's mock; see the module docstring."""

    provider: ClassVar[str]
    #: Extra MockServer arguments (options, lifecycle, ...).
    server_options: ClassVar[dict[str, Any]] = {}
    #: The longest clock jump (provider seconds) the ``advance`` rule makes.
    max_advance: ClassVar[float] = 10.0
    #: Provider seconds the clock moves per step while a request waits on it (see ``call``).
    drive_step: ClassVar[float] = 1.0
    #: Task/run ids returned by rules, for other rules to act on.
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.server = MockServer(self.provider, clock="manual", seed=0, **self.server_options)
        lifecycle = contracts.load(self.provider).behaviour.lifecycle
        self.lifecycle = lifecycle
        self.seen: dict[str, list[str]] = {}

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run a coroutine on the machine's loop, moving the manual clock until it is done.

        Answers that wait on provider time (a blocking run, a synchronous generation) would
        otherwise never come under a clock that only moves when told to.
        """

        async def driven() -> T:
            task = asyncio.ensure_future(awaitable)
            for _ in range(10):  # an answer that needs no provider time comes without moving it
                if task.done():
                    return task.result()
                await asyncio.sleep(0)
            while not task.done():
                self.server.clock.advance(self.drive_step)
                await asyncio.sleep(0)
            return task.result()

        return self.loop.run_until_complete(driven())

    def call(self, method: str, path: str, **kwargs: Any) -> MockResponse:
        """One request to the mock, in process (``json=``, ``body=``, ``headers=``, ``query=``)."""
        return self.run(self.server.request(method, path, **kwargs))

    def observe(self, key: str, state: str) -> None:
        """Record that ``key`` was seen in ``state``; the move from its last state must be legal."""
        history = self.seen.setdefault(key, [])
        if history and self.lifecycle is not None:
            assert self.lifecycle.is_legal(history[-1], state), (key, history, state)
        history.append(state)

    @rule(fraction=st.floats(min_value=0, max_value=1, allow_nan=False))
    def advance(self, fraction: float) -> None:
        self.server.clock.advance(fraction * self.max_advance)

    @invariant()
    def terminal_states_stay_terminal(self) -> None:
        if self.lifecycle is None:
            return
        for key, history in self.seen.items():
            for i, state in enumerate(history):
                if state in self.lifecycle.terminal:
                    assert set(history[i:]) == {state}, (key, history)

    @invariant()
    def the_mock_never_crashed(self) -> None:
        assert self.server.errors == [], self.server.errors

    def teardown(self) -> None:
        self.loop.run_until_complete(self.server.aclose())
        self.loop.close()
