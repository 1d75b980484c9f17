"""Engine pieces on their own: clock, tasks, store, faults, images, journal, rate limit."""

from __future__ import annotations

import asyncio
import io
import json
import random
import uuid
import zlib

import pytest
from PIL import Image

from imagegen_conformance import contracts
from imagegen_conformance.mocks.engine import (
    FORMATS,
    FaultError,
    FaultPlan,
    FaultSpec,
    ImageSpec,
    ImageTokenError,
    ImageTokens,
    ManualClock,
    MemoryTaskStore,
    RateLimiter,
    ScaledClock,
    StoreFull,
    Task,
    compact,
    new_task,
    redact_headers,
    redact_url,
    render,
    uuid4_text,
)
from imagegen_conformance.mocks.engine._images import drawn_by_pillow

LIFECYCLE = contracts.load("cloudsway").behaviour.lifecycle
assert LIFECYCLE is not None


async def test_manual_clock_moves_only_when_advanced() -> None:
    clock = ManualClock(start=1000.0)
    assert clock.now() == 1000.0
    sleeper = asyncio.ensure_future(clock.sleep(5))
    await asyncio.sleep(0.01)
    assert not sleeper.done()
    clock.advance(4.9)
    await asyncio.sleep(0.01)
    assert not sleeper.done()
    clock.advance(0.1)
    await asyncio.wait_for(sleeper, 1)
    assert clock.now() == pytest.approx(1005.0)


def test_manual_clock_refuses_to_go_backwards() -> None:
    with pytest.raises(ValueError, match="backwards"):
        ManualClock().advance(-1)


async def test_scaled_clock_runs_provider_time_faster() -> None:
    clock = ScaledClock(100)
    before = clock.now()
    loop = asyncio.get_running_loop()
    wall = loop.time()
    await clock.sleep(5)  # 5 provider seconds = 0.05 s
    assert loop.time() - wall < 1.0
    assert clock.now() - before >= 5.0


def test_scaled_clock_cannot_be_advanced() -> None:
    with pytest.raises(RuntimeError, match="--clock manual"):
        ScaledClock(2).advance(1)


def test_task_timeline_walks_the_phases() -> None:
    task = new_task(LIFECYCLE, now=0.0, rng=random.Random(1))
    pending, processing = task.durations
    assert 0.5 <= pending <= 1.5 and 2.0 <= processing <= 4.0
    assert task.state(0.0) == "pending"
    assert task.state(pending + 0.01) == "processing"
    assert task.state(pending + processing + 0.01) == "completed"
    assert task.finished_at(pending + processing + 1) == pytest.approx(pending + processing)
    assert task.finished_at(pending) is None


def test_poll_driven_task_moves_one_step_per_poll() -> None:
    task = new_task(LIFECYCLE, now=0.0, rng=random.Random(1), mode="polls")
    seen = [task.poll(0.0) for _ in range(5)]
    # phases: pending for 1 poll, processing for 2, then completed
    assert seen == ["processing", "processing", "completed", "completed", "completed"]
    assert task.state(0.0) == "completed"


def test_failing_and_never_finishing_tasks() -> None:
    failing = new_task(LIFECYCLE, now=0.0, rng=random.Random(1), fail=True)
    assert failing.state(100.0) == "failed"
    never = new_task(LIFECYCLE, now=0.0, rng=random.Random(1), never_finish=True)
    assert never.state(10**9) == "processing"
    assert never.finished_at(10**9) is None


def test_end_cuts_a_live_task_short_but_not_a_finished_one() -> None:
    task = new_task(LIFECYCLE, now=0.0, rng=random.Random(1))
    assert task.end("failed", 0.1)
    assert task.state(0.2) == "failed"
    done = new_task(LIFECYCLE, now=0.0, rng=random.Random(1))
    assert not done.end("failed", 100.0)


def test_store_expires_finished_tasks_after_retention() -> None:
    clock = ManualClock(start=0.0)
    store = MemoryTaskStore(clock, retention=60.0, max_tasks=10)
    task = new_task(LIFECYCLE, now=0.0, rng=random.Random(1))
    store.add(task)
    clock.advance(10)
    assert store.get(task.id) is task
    clock.advance(60)
    assert store.get(task.id) is None
    assert len(store) == 0


def test_full_store_refuses_instead_of_dropping_live_tasks() -> None:
    clock = ManualClock(start=0.0)
    store = MemoryTaskStore(clock, retention=60.0, max_tasks=3)
    live = [new_task(LIFECYCLE, now=0.0, rng=random.Random(i)) for i in range(3)]
    for task in live:
        store.add(task)
    with pytest.raises(StoreFull):
        store.add(new_task(LIFECYCLE, now=0.0, rng=random.Random(9)))
    assert all(store.get(t.id) is t for t in live)
    clock.advance(1000)  # all finished and past retention: room again
    store.add(new_task(LIFECYCLE, now=clock.now(), rng=random.Random(10)))
    assert len(store) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("http:503", FaultSpec("http", "503"), id="http"),
        pytest.param("http:400:AI_IMAGE_SIZE_ERROR;op=createImageTask",
                     FaultSpec("http", "400:AI_IMAGE_SIZE_ERROR", "createImageTask"), id="http-code-op"),
        pytest.param("rate_limit:3;times=2;p=0.5", FaultSpec("rate_limit", "3", None, 2, 0.5), id="opts"),
        pytest.param("latency:20-80", FaultSpec("latency", "20-80"), id="latency-range"),
        pytest.param("reset", FaultSpec("reset"), id="bare"),
    ],
)
def test_fault_specs_parse(text: str, expected: FaultSpec) -> None:
    assert FaultSpec.parse(text) == expected
    assert FaultSpec.parse(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("htp:503", "Did you mean 'http'", id="typo"),
        pytest.param("http:200", "4xx/5xx", id="not-an-error-status"),
        pytest.param("latency:soon", "milliseconds", id="latency-not-a-number"),
        pytest.param("reset;when=now", "valid: op, times, p", id="unknown-option"),
        pytest.param("reset;p=2", "within 0..1", id="probability"),
    ],
)
def test_bad_fault_specs_say_how_to_fix_them(text: str, message: str) -> None:
    with pytest.raises(FaultError, match=message):
        FaultSpec.parse(text)


def test_fault_plan_counts_down_and_filters_by_operation() -> None:
    plan = FaultPlan([FaultSpec.parse("http:503;op=getImageTask;times=2")])
    rng = random.Random(0)
    assert plan.select("createImageTask", rng) == []
    assert len(plan.select("getImageTask", rng)) == 1
    assert len(plan.select("getImageTask", rng)) == 1
    assert plan.select("getImageTask", rng) == []
    assert plan.specs() == []


def test_images_are_deterministic_at_the_exact_size_and_format() -> None:
    spec = ImageSpec.of(720, 1280, fmt="jpeg", prompt="p", seed=3, index=1)
    data = render(spec)
    assert data == render(ImageSpec.of(720, 1280, fmt="jpeg", prompt="p", seed=3, index=1))
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("JPEG", (720, 1280))
    assert render(ImageSpec.of(720, 1280, fmt="jpeg", prompt="q", seed=3, index=1)) != data


def test_image_tokens_are_signed_and_expire() -> None:
    tokens = ImageTokens(b"secret")
    spec = ImageSpec.of(64, 32, prompt="x")
    token = tokens.issue(spec, expires_at=100.0)
    assert tokens.open(token, now=99.0) == spec
    with pytest.raises(ImageTokenError) as expired:
        tokens.open(token, now=101.0)
    assert expired.value.expired
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(ImageTokenError, match="signature"):
        tokens.open(forged, now=0.0)
    with pytest.raises(ImageTokenError, match="signature"):
        ImageTokens(b"other").open(token, now=0.0)


def test_redaction_keeps_the_scheme_and_hides_the_secret() -> None:
    headers = redact_headers({"Authorization": "Bearer sk-canary", "X-Api-Key": "k", "Accept": "*/*"})
    assert headers == {"Authorization": "Bearer <redacted>", "X-Api-Key": "<redacted>", "Accept": "*/*"}
    url = redact_url("http://h/files/a.png?timestamp=1&nonce=abc&sign=XYZ%3D")
    assert "XYZ" not in url and "abc" not in url and "timestamp=1" in url


def test_rate_limiter_refills_with_provider_time() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(clock, requests=2, per_seconds=10)
    assert limiter.check("k") == 0 and limiter.check("k") == 0
    wait = limiter.check("k")
    assert wait == pytest.approx(5.0)
    assert limiter.check("other") == 0
    clock.advance(5)
    assert limiter.check("k") == 0


async def test_streamed_bodies_pass_through_the_journal_tap_and_truncate() -> None:
    from collections.abc import AsyncIterator

    from imagegen_conformance.mocks import MockServer
    from imagegen_conformance.mocks.engine import MockRequest, MockResponse

    server = MockServer("acedata", clock="manual")  # truncate does not apply to Cloudsway
    closed: list[bool] = []

    async def chunks() -> AsyncIterator[bytes]:
        try:
            for i in range(4):
                yield f"data: {i}\n\n".encode()
        finally:
            closed.append(True)

    async def streaming(request: MockRequest, call: object) -> MockResponse:
        return MockResponse.stream(chunks(), "text/event-stream")

    server.provider.images = streaming  # type: ignore[method-assign]
    path = "/flux/images"
    headers = {"Authorization": "Bearer k"}
    valid = {"action": "generate", "prompt": "a fox"}
    whole = await server.request("POST", path, json=valid, headers=headers)
    assert not isinstance(whole.body, bytes)
    assert [c async for c in whole.body] == [f"data: {i}\n\n".encode() for i in range(4)]
    entry = server.journal.entries()[-1]
    assert entry.complete and len(entry.events) == 4 and closed == [True]

    cut = await server.request("POST", path, json=valid, headers={**headers, "X-Mock-Fault": "truncate:2"})
    assert not isinstance(cut.body, bytes)
    assert len([c async for c in cut.body]) == 2
    assert closed == [True, True]


async def test_public_url_rewrites_links_of_the_primary_host_only() -> None:
    from imagegen_conformance.mocks import MockServer
    from imagegen_conformance.mocks.engine import MockRequest

    server = MockServer("cloudsway", clock="manual", public_url="https://mocks.example/cs/")
    created = await server.dispatch(MockRequest.build(
        "POST", "/v2/ai/e/images/generations", headers={"Authorization": "Bearer k"},
        body=b'{"prompts": "x"}'))
    server.clock.advance(60)
    task_id = created.json_body()["taskId"]
    polled = await server.dispatch(MockRequest.build(
        "GET", f"/v2/ai/e/images/tasks/{task_id}", headers={"Authorization": "Bearer k"}))
    assert polled.json_body()["imageUrls"][0].startswith("https://mocks.example/cs/images/")
    other = MockRequest.build("GET", "/x", role="elsewhere", base_url="http://127.0.0.1:9")
    await server.dispatch(other)
    assert other.base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("size", [(1, 1), (1, 156), (5, 3), (4096, 1)], ids=str)
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_tiny_and_thin_images_render_at_their_size(size: tuple[int, int], fmt: str) -> None:
    image = Image.open(io.BytesIO(render(ImageSpec.of(*size, fmt=fmt))))
    assert image.size == size


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (6, 6), (7, 4), (33, 1), (512, 768), (1024, 1024)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_rendered_images_decode_to_the_drawn_picture(size: tuple[int, int], fmt: str) -> None:
    spec = ImageSpec.of(*size, fmt=fmt, prompt="a red fox", seed=3, index=1)
    decoded = Image.open(io.BytesIO(render(spec)))
    decoded.load()
    assert (decoded.format, decoded.mode, decoded.size) == (FORMATS[fmt][0], "RGB", size)
    if fmt == "png":  # lossless: the very pixels Pillow draws
        assert decoded.tobytes() == drawn_by_pillow(spec).tobytes()
    assert render(spec) == render(ImageSpec.of(*size, fmt=fmt, prompt="a red fox", seed=3, index=1))


def test_a_full_store_refuses_without_looking_at_every_task() -> None:
    clock = ManualClock(start=0.0)
    store = MemoryTaskStore(clock, retention=60.0, max_tasks=1000)
    live = [new_task(LIFECYCLE, now=0.0, rng=random.Random(i), never_finish=True) for i in range(1000)]
    for task in live:
        store.add(task)
    looked = 0
    original = Task.finished_at

    def counting(self: Task, now: float) -> float | None:
        nonlocal looked
        looked += 1
        return original(self, now)

    Task.finished_at = counting  # type: ignore[method-assign]
    try:
        for n in range(50):
            with pytest.raises(StoreFull):
                store.add(new_task(LIFECYCLE, now=0.0, rng=random.Random(5000 + n)))
    finally:
        Task.finished_at = original  # type: ignore[method-assign]
    assert looked == 0  # nothing can have expired before one retention: the heap's top says so


def test_a_cancelled_task_still_frees_its_place_after_retention() -> None:
    clock = ManualClock(start=0.0)
    store = MemoryTaskStore(clock, retention=60.0, max_tasks=2)
    first = new_task(LIFECYCLE, now=0.0, rng=random.Random(1), never_finish=True)
    store.add(first)
    clock.advance(30)
    assert first.end("failed", clock.now())  # cancelled at 30: forgotten after 90
    clock.advance(10)
    second = new_task(LIFECYCLE, now=clock.now(), rng=random.Random(2), never_finish=True)
    store.add(second)  # never finishes: forgotten after 100
    clock.advance(51)  # 91
    store.add(new_task(LIFECYCLE, now=clock.now(), rng=random.Random(3)))
    assert store.get(first.id) is None and store.get(second.id) is second


@pytest.mark.parametrize("size", [(1, 1), (7, 300), (1024, 1024), (4096, 33)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_png_stream_checksums_hold(size: tuple[int, int]) -> None:
    # zlib itself (not only Pillow's lenient reader) accepts the IDAT stream and its Adler-32.
    png = render(ImageSpec.of(*size, prompt="fox"))
    at = png.index(b"IDAT")
    length = int.from_bytes(png[at - 4 : at], "big")
    rows = zlib.decompress(png[at + 4 : at + 4 + length])
    width, height = size
    assert len(rows) == height * (1 + 3 * width)
    assert all(rows[y * (1 + 3 * width)] == 0 for y in range(height))  # filter None on every row


def test_a_compact_record_is_an_ordinary_dict() -> None:
    data = {"prompts": "a fox", "batchsize": 2, "width": 1024}
    records = [compact(data) for _ in range(3)]
    first = records[0]
    assert first == data and type(first) is dict and json.dumps(first) == json.dumps(data)
    assert list(first) == list(data)
    first["batchsize"] = 3
    first["extra"] = [1]
    del first["width"]
    assert first == {"prompts": "a fox", "batchsize": 3, "extra": [1]}
    assert records[1] == data == records[2]  # the others are untouched
    assert compact({1: "a"}) == {1: "a"}  # keys that are not strings: a plain copy


def test_a_task_keeps_every_field_it_is_given_and_set() -> None:
    tasks = [new_task(LIFECYCLE, now=0.0, rng=random.Random(i)) for i in range(2)]
    assert tasks[0]._shape is tasks[1]._shape  # one lifecycle: one shape for all its tasks
    task = tasks[0]
    assert (task.ended, task.failure, task.faults, task._terminal_at) == (None, None, (), None)
    assert task._rare is None
    fault = FaultSpec.parse("expired_url")
    failing = new_task(LIFECYCLE, now=0.0, rng=random.Random(3), fail="boom", faults=(fault,))
    assert failing.failure == "boom" and failing.faults == (fault,) and failing.ended is None
    task.states, task.polls_needed = ("queued",), (2,)
    task.mode, task.final, task.terminal = "polls", "failed", ("failed",)
    assert (task.states, task.polls_needed, task.mode, task.final, task.terminal) == (
        ("queued",), (2,), "polls", "failed", ("failed",))
    assert tasks[1].states == tuple(p.state for p in LIFECYCLE.phases)  # the other is untouched
    assert task.poll(0.0) == "queued" and task.poll(0.0) == "failed"
    assert task._terminal_at == 0.0 and task.finished_at(5.0) == 0.0


def test_a_removed_task_filed_for_expiry_does_not_take_a_new_task_of_its_id_with_it() -> None:
    clock = ManualClock(start=0.0)
    store = MemoryTaskStore(clock, retention=60.0, max_tasks=10)
    old = new_task(LIFECYCLE, now=0.0, rng=random.Random(1), task_id="same")
    store.add(old)  # ends within seconds: filed to be looked at about a minute later
    store.remove("same")
    clock.advance(50)
    new = new_task(LIFECYCLE, now=clock.now(), rng=random.Random(2), task_id="same", never_finish=True)
    store.add(new)
    clock.advance(20)  # 70: the old entry comes up; it names the new task, which is live
    store.add(new_task(LIFECYCLE, now=clock.now(), rng=random.Random(3)))
    assert store.get("same") is new and len(store) == 2


def test_many_removed_tasks_leave_the_store_working() -> None:
    clock = ManualClock(start=0.0)
    store = MemoryTaskStore(clock, retention=60.0, max_tasks=5000)
    for n in range(3000):
        task = new_task(LIFECYCLE, now=0.0, rng=random.Random(n))
        store.add(task)
        store.remove(task.id)
    kept = [new_task(LIFECYCLE, now=0.0, rng=random.Random(10_000 + n)) for n in range(3)]
    for task in kept:
        store.add(task)
    clock.advance(30)
    store.add(new_task(LIFECYCLE, now=clock.now(), rng=random.Random(1)))
    assert len(store) == 4 and all(store.get(t.id) is t for t in kept)
    clock.advance(1000)
    assert store.sweep() == 4 and len(store) == 0


@pytest.mark.parametrize("bits", [0, 2**128 - 1, 0x0123456789ABCDEF0123456789ABCDEF, 2**76, 2**64 - 1])
def test_uuid4_text_is_what_uuid_writes(bits: int) -> None:
    assert uuid4_text(bits) == str(uuid.UUID(int=bits, version=4))
