"""Engine pieces two providers share: stream keep-alive pings on the clock, signed links."""

from __future__ import annotations

import asyncio

from imagegen_conformance.mocks.engine import LinkSigner, ManualClock, Pings


async def _collect(pings: Pings, clock: ManualClock, until: float, steps: list[float]) -> list[float]:
    """Drive the manual clock by ``steps`` while ``pings.until(until)`` runs; when each ping came."""
    seen: list[float] = []

    async def consume() -> None:
        async for _ in pings.until(until):
            seen.append(clock.now())

    job = asyncio.ensure_future(consume())
    for step in steps:
        await asyncio.sleep(0)
        clock.advance(step)
        for _ in range(3):
            await asyncio.sleep(0)
    await asyncio.wait_for(job, 2)
    return seen


async def test_pings_fall_due_on_a_grid_until_the_target() -> None:
    clock = ManualClock(start=100.0)
    pings = Pings(clock, 10)
    seen = await _collect(pings, clock, 135.0, [10, 10, 10, 5])
    assert seen == [110.0, 120.0, 130.0]


async def test_a_clock_that_jumps_owes_one_ping_not_many() -> None:
    clock = ManualClock(start=0.0)
    pings = Pings(clock, 10)
    assert await _collect(pings, clock, 100.0, [95, 5]) == [95.0]
    assert pings.next == 100.0


async def test_a_ping_due_at_the_target_waits_for_the_next_wait() -> None:
    clock = ManualClock(start=0.0)
    pings = Pings(clock, 10)
    assert await _collect(pings, clock, 10.0, [10]) == []  # the event at 10 comes first ...
    assert await _collect(pings, clock, 15.0, [5]) == [10.0]  # ... then the ping it owed


async def test_stop_ends_the_wait_before_any_ping() -> None:
    clock = ManualClock(start=0.0)
    pings = Pings(clock, 10)
    stopped = [False]

    async def consume() -> list[None]:
        return [p async for p in pings.until(1000.0, stop=lambda: stopped[0])]

    job = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    stopped[0] = True
    clock.advance(10)  # the wait ends at the ping's time; the stop is seen before the ping
    assert await asyncio.wait_for(job, 2) == []


def test_restart_moves_the_grid_to_now() -> None:
    clock = ManualClock(start=0.0)
    pings = Pings(clock, 5)
    clock.advance(3)
    pings.restart()
    assert pings.next == 8.0


def test_link_signer_signs_and_compares() -> None:
    signer = LinkSigner(b"k")
    assert signer.hex("a") == signer.hex("a") != LinkSigner(b"other").hex("a")
    assert signer.urlsafe("a").endswith("=")  # Dify keeps the padding
    assert signer.matches(signer.hex("a"), signer.hex("a"))
    assert not signer.matches("", signer.hex("a")) and not signer.matches("x\udcff", signer.hex("a"))

