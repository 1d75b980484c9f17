"""fal.ai queue API for fal-ai/flux-1/dev, and the synchronous fal.run host.

Seed 002 (the submit call and its IN_QUEUE body) and shared/reference/providers.md §3. Two
hosts serve the same model path with different meanings: ``queue`` (queue.fal.run) queues a
request and answers its URLs; ``run`` (fal.run) answers the output directly.

Requests share a fixed number of runners (option ``runners``). A request's timeline is fixed
when it is submitted: it waits IN_QUEUE for its dispatch delay and for the first runner that
frees up (first in, first out), then runs IN_PROGRESS. Nothing runs per request in the
background; cancelling a queued request recomputes the waits of those behind it. With
``--lifecycle polls`` each status poll moves a request one step instead, and a request leaves
the queue only while fewer than ``runners`` requests are in progress.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import heapq
import itertools
import math
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from functools import partial
from typing import Any

from imagegen_conformance.contracts import SchemaIssue

from .engine import (
    Body,
    Call,
    DeliveryPolicy,
    Ed25519Signer,
    ImageSpec,
    MockRequest,
    MockResponse,
    Pings,
    Provider,
    Task,
    dumps,
    redact_url,
    render,
    route,
    sse_comment,
    sse_event,
    uuid4_text,
)

APP = "/fal-ai/flux-1"  # [V] status, result and cancel URLs use owner/app only, no "/dev"
QUEUED, RUNNING, DONE = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
CANCELLED = "Request cancelled by the client."  # [V] fal's RequestCancelledException message
_INFRA_MESSAGES = {
    "request_timeout": "Request timed out",
    "startup_timeout": "Runner startup timed out",
    "runner_scheduling_failure": "Failed to schedule a runner for the request",
    "runner_connection_timeout": "Connection to the runner timed out",
    "runner_disconnected": "The runner disconnected",
}
_INT_FIELDS = ("num_inference_steps", "num_images", "seed")
_BOOL_FIELDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
_PYDANTIC_TYPES = {
    "integer": ("int_type", "Input should be a valid integer"),
    "number": ("float_type", "Input should be a valid number"),
    "string": ("string_type", "Input should be a valid string"),
    "boolean": ("bool_type", "Input should be a valid boolean"),
    "object": ("model_type", "Input should be a valid dictionary or object to extract fields from"),
}
_NUMBER = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


class FalProvider(Provider):
    """fal's queue host and sync host for ``fal-ai/flux-1/dev``.

    >>> from mocks import MockServer
    >>> server = MockServer("fal", clock="manual", options={"runners": "2"})
    """

    id = "fal"
    image_prefix = "/files/"  # CDN-style links (fal serves v3.fal.media/files/...)

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        raw = self.contract.behaviour.raw
        self._sizes = {name: (int(w), int(h)) for name, (w, h) in raw["image_sizes"].items()}
        self._webhook_policy = DeliveryPolicy.from_contract(raw.get("webhooks"))
        self._seq = itertools.count(1)
        self._order: deque[Task] = deque()  # requests in submission order, finished ones pruned
        self._free: list[float] = []  # heap: when each runner is free, after every scheduled request
        self._last_start = -math.inf  # requests start in submission order
        # (start, seq) of every scheduled request, sorted: queue_position is two bisections.
        self._starts: list[tuple[float, int]] = []
        self._timeouts: list[Task] = []  # requests that will end by x-fal-request-timeout
        self._waiters: dict[str, asyncio.Task[Any]] = {}  # webhook jobs waiting for their request's end
        # [V] webhooks are signed with ED25519; the public keys are published as a JWKS.
        self.webhook_signer = Ed25519Signer(server.secret, "fal-webhook")

    def on_secret(self) -> None:
        # Derived from the server's secret: every worker of a shared store signs with one key.
        self.webhook_signer = Ed25519Signer(self.server.secret, "fal-webhook")

    # --- queue host --------------------------------------------------------------------

    @route("POST", "/fal-ai/flux-1/dev", operation="submitRequest", role="queue")
    async def submit(self, request: MockRequest, call: Call) -> MockResponse:
        # [V-3p] the queue accepts any body: invalid input fails at the result with a 422.
        inputs, problems = self._inputs(call.checked)
        webhook = request.query.get("fal_webhook")
        task = await self._new_request(call, "queue", inputs, problems, webhook=webhook)
        key = self.contract.behaviour.auth.key_of(request.headers.get("Authorization"))
        task.data["user_id"] = _user_id(key)
        body = self._status_body(request, task, QUEUED, call.now, logs=False,
                                 position=await self._position(task, call.now))
        if webhook:
            body["gateway_request_id"] = task.id  # [V] the docs show it with fal_webhook
        return MockResponse.json(body, 200, {"x-fal-request-id": task.id})

    @route("GET", APP + "/requests/{request_id}/status", operation="getRequestStatus", role="queue")
    async def status(self, request: MockRequest, call: Call) -> MockResponse:
        task = self._find(request)
        if task is None:
            return self._unknown(request)
        now = call.now
        if self.server.lifecycle == "polls":
            await self._poll_step(task, now)
        state = task.state(now)
        if state == DONE:  # a completed request's status never changes again
            return call.answer_once(task, lambda: self._status_answer(request, task, state, now))
        position = await self._position(task, now) if state == QUEUED else None
        return self._status_answer(request, task, state, now, position)

    def _status_answer(self, request: MockRequest, task: Task, state: str, now: float,
                       position: int | None = None) -> MockResponse:
        body = self._status_body(request, task, state, now, logs=_truthy(request.query.get("logs")),
                                 position=position)
        # [V] 202 while queued or running, 200 once completed.
        return MockResponse.json(body, 200 if state == DONE else 202, {"x-fal-request-id": task.id})

    @route("GET", APP + "/requests/{request_id}/status/stream", operation="streamRequestStatus", role="queue")
    async def status_stream(self, request: MockRequest, call: Call) -> MockResponse:
        task = self._find(request)
        if task is None:
            return self._unknown(request)
        logs = _truthy(request.query.get("logs"))
        return MockResponse.stream(
            self._events(request, task, logs), "text/event-stream", headers={"x-fal-request-id": task.id}
        )

    @route("GET", APP + "/requests/{request_id}", operation="getRequestResult", role="queue")
    async def result(self, request: MockRequest, call: Call) -> MockResponse:
        task = self._find(request)
        if task is None:
            return self._unknown(request)
        now = call.now
        state = task.state(now)
        headers = {"x-fal-request-id": task.id}
        if state != DONE:
            if self.option("in_progress_result") == "202":
                position = await self._position(task, now) if state == QUEUED else None
                body = self._status_body(request, task, state, now, logs=False, position=position)
                return MockResponse.json(body, 202, headers)
            return MockResponse.json({"detail": "Request is still in progress"}, 400, headers)
        status, answer, extra = self._answer(task, request.base_url, call)
        if status == 200 and self._result_expired(task, answer, now):
            return self._unknown(request)
        return MockResponse.json(answer, status, {**headers, **extra})

    @route("PUT", APP + "/requests/{request_id}/cancel", operation="cancelRequest", role="queue")
    async def cancel(self, request: MockRequest, call: Call) -> MockResponse:
        task = self._find(request)
        if task is None:
            return MockResponse.json({"status": "NOT_FOUND"}, 404)
        now = call.now
        headers = {"x-fal-request-id": task.id}
        state = task.state(now)
        if state == DONE:
            return MockResponse.json({"status": "ALREADY_COMPLETED"}, 400, headers)
        task.data["cancel_requested"] = True
        # [V] a queued request is removed; a running one gets a signal its app may ignore.
        if state == QUEUED or self.option("cancel_in_progress") == "stops":
            task.data["cancelled"] = True
            task.end(DONE, now)
            if self.server.shared is not None:
                await self._leave_shared_line(task, now)
            else:
                self._reschedule(now)
            self._on_done(task)
        if state == QUEUED and self.option("cancel_queued") == "ok":
            # [V] docs: "fal removed the request from the queue", status OK ([I] HTTP 200).
            return MockResponse.json({"status": "OK"}, 200, headers)
        return MockResponse.json({"status": "CANCELLATION_REQUESTED"}, 202, headers)

    # --- sync host ---------------------------------------------------------------------

    @route("POST", "/fal-ai/flux-1/dev", operation="runSync", role="run")
    async def run(self, request: MockRequest, call: Call) -> MockResponse:
        inputs, problems = self._inputs(call.checked)  # refuse() answered the invalid ones
        task = await self._new_request(call, "sync", inputs, problems)
        if self.server.lifecycle == "polls":
            task.polls = int(sum(task.polls_needed))  # deterministic runs: answer at once
        else:
            while task.finished_at(self.server.clock.now()) is None:
                end = self._end_time(task)
                if math.isinf(end):
                    await self.server.clock.sleep(3600.0)
                else:
                    await self.server.clock.sleep(max(end - self.server.clock.now(), 0.001))
        status, body, extra = self._answer(task, request.base_url, call)
        return MockResponse.json(body, status, {"x-fal-request-id": task.id, **extra})

    @route("POST", "/fal-ai/flux-1/dev/stream", operation="streamRun", role="run")
    async def run_stream(self, request: MockRequest, call: Call) -> MockResponse:
        """[V] fal.run/<app>/stream: text/event-stream of partial results, then the output."""
        inputs, problems = self._inputs(call.checked)  # refuse() answered the invalid ones
        task = await self._new_request(call, "sync", inputs, problems)
        return MockResponse.stream(
            self._partials(request, task, call), "text/event-stream",
            headers={"x-fal-request-id": task.id},
        )

    @route("GET", "/.well-known/jwks.json", operation="getWebhookJwks", role="queue", auth=False)
    async def jwks(self, request: MockRequest, call: Call) -> MockResponse:
        """The webhook signing keys ([V] fal publishes them at rest.alpha.fal.ai/.well-known/jwks.json)."""
        # [I] padded `x`: fal's own Python example decodes it with base64.urlsafe_b64decode,
        # which refuses unpadded input; option jwks_x=unpadded gives RFC 7515's form.
        key = self.webhook_signer.jwk(padded=self.option("jwks_x") == "padded")
        return MockResponse.json({"keys": [key]}, 200, {"Cache-Control": "public, max-age=86400"})

    # --- the provider's own answers ------------------------------------------------------

    def error(
        self, request: MockRequest, status: int, code: str | int | None = None,
        message: str | None = None, headers: dict[str, str] | None = None,
    ) -> MockResponse:
        spec = self.error_spec(status)
        hdrs = dict(headers or {})
        request_id = request.params.get("request_id")
        if request_id:
            hdrs["x-fal-request-id"] = request_id
        infra = self.contract.behaviour.raw.get("infrastructure_errors", {})
        error_type = str(code) if code is not None else (str(spec.code) if spec.code else "")
        if error_type in infra:
            # [V] infrastructure errors carry error_type in the body and X-Fal-Error-Type.
            hdrs["X-Fal-Error-Type"] = error_type
            detail = message or _INFRA_MESSAGES.get(error_type, spec.message)
            return MockResponse.json({"detail": detail, "error_type": error_type}, status, hdrs)
        return MockResponse.json({"detail": message or spec.message}, status, hdrs)

    def auth_error(self, request: MockRequest, reason: str) -> MockResponse:
        messages = {  # [I] wording; fal answers 401 with a detail string
            "missing": "Authentication is required to access this resource.",
            "scheme": "Authorization must be 'Key <FAL_KEY>' (or 'Key <key_id>:<key_secret>').",
            "invalid": "No user found for Key ID and Secret",
        }
        return self.error(request, 401, message=messages[reason])

    def overloaded(self, request: MockRequest) -> MockResponse:
        return self.error(request, 503, "runner_scheduling_failure")

    def anonymous_allowed(self, request: MockRequest, operation: str) -> bool:
        # [V] docs: "Public models also accept requests without a key"; option auth=required.
        return self.option("auth") == "optional" and super().anonymous_allowed(request, operation)

    def describe_task(self, task: Any) -> dict[str, Any]:
        data = task.data
        out: dict[str, Any] = {
            "kind": data["kind"], "outcome": self._outcome(task), "seq": data["seq"],
            "queue_wait": task.durations[0], "run_seconds": None if math.isinf(data["run"]) else data["run"],
            "cancel_requested": data["cancel_requested"],
        }
        if data["inputs"]:
            out.update({k: data["inputs"][k] for k in ("prompt", "num_images", "output_format", "seed")})
            out["size"] = "{}x{}".format(*data["size"])
        if data.get("webhook"):
            out["webhook"] = redact_url(data["webhook"])
            out["webhook_sent"] = data["webhook_sent"]
        return out

    def on_reset(self) -> None:
        for job in self._waiters.values():
            job.cancel()
        self._waiters.clear()
        self._order.clear()
        self._free = []
        self._last_start = -math.inf
        self._starts = []
        self._timeouts = []

    # --- input -------------------------------------------------------------------------

    def normalise(self, operation: str, data: dict[str, Any]) -> dict[str, Any]:
        return self._coerce(data)

    def refuse(self, request: MockRequest, body: Body) -> MockResponse | None:
        """Only fal.run (and its stream route) refuses at once (422); the queue accepts any body
        and fails at the result."""
        if body.operation not in ("runSync", "streamRun"):
            return None
        _, problems = self._inputs(body)
        if not problems:
            return None
        request_id = uuid4_text(self.server.rng.getrandbits(128))
        return self._validation_error(problems, request_id)

    def _inputs(self, body: Body | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The normalised input, or the 422 detail list a FastAPI/pydantic app would give."""
        assert body is not None
        error = body.error
        if error is not None:
            if error.kind == "empty":
                return None, [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
            if error.kind == "type":
                _, msg = _PYDANTIC_TYPES["object"]
                return None, [{"type": "model_attributes_type", "loc": ["body"], "msg": msg,
                               "input": error.value}]
            return None, [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                           "input": {}, "ctx": {"error": str(error).rsplit(": ", 1)[-1]}}]
        data = body.data
        assert data is not None
        problems = [_detail(issue, data) for issue in body.issues]
        steps = data.get("num_inference_steps")
        if self.option("steps_min") == "1" and steps == 0 and not problems:
            problems.append({"type": "greater_than_equal", "loc": ["body", "num_inference_steps"],
                             "msg": "Input should be greater than or equal to 1", "input": 0,
                             "ctx": {"ge": 1}})
        if problems:
            return None, problems
        size = data.get("image_size", "landscape_4_3")
        width, height = self._sizes[size] if isinstance(size, str) else (size["width"], size["height"])
        inputs = {
            "prompt": data["prompt"],
            "image_size": size,
            "num_inference_steps": data.get("num_inference_steps", 28),
            "guidance_scale": data.get("guidance_scale", 3.5),
            "num_images": data.get("num_images", 1),
            "seed": data.get("seed"),
            "enable_safety_checker": data.get("enable_safety_checker", True),
            "output_format": data.get("output_format", "jpeg"),
            "acceleration": data.get("acceleration", self.option("acceleration_default")),
            "sync_mode": data.get("sync_mode", False),
            "width": width,
            "height": height,
        }
        return inputs, []

    def _coerce(self, data: dict[str, Any]) -> dict[str, Any]:
        """What pydantic's lax mode accepts: numeric strings, whole floats, boolean words."""
        if self.option("enum_values") == "lenient":
            # Seed: output_format "default, JPEG, png"; acceleration "default, none, regular, high".
            for name in ("output_format", "acceleration"):
                value = data.get(name)
                if isinstance(value, str):
                    data[name] = value.strip().lower()
                    if data[name] == "default":
                        del data[name]
        for name in _INT_FIELDS:
            value = data.get(name)
            if isinstance(value, str) and _NUMBER.match(value) and float(value).is_integer():
                data[name] = int(float(value))
            elif isinstance(value, float) and value.is_integer():
                data[name] = int(value)
        size = data.get("image_size")
        if isinstance(size, dict):
            # pydantic's lax int also takes whole floats inside the size object (156.0 -> 156)
            size = dict(size)
            for name in ("width", "height"):
                value = size.get(name)
                if isinstance(value, float) and value.is_integer():
                    size[name] = int(value)
            data["image_size"] = size
        value = data.get("guidance_scale")
        if isinstance(value, str) and _NUMBER.match(value):
            data["guidance_scale"] = float(value)
        for name in ("enable_safety_checker", "sync_mode"):
            value = data.get(name)
            if isinstance(value, str) and value.strip().lower() in _BOOL_FIELDS:
                data[name] = _BOOL_FIELDS[value.strip().lower()]
        return data

    # --- requests and runners ----------------------------------------------------------

    async def _new_request(
        self, call: Call, kind: str, inputs: dict[str, Any] | None, problems: list[dict[str, Any]],
        *, webhook: str | None = None,
    ) -> Task:
        lifecycle = self.contract.behaviour.lifecycle
        assert lifecycle is not None
        queue_phase, run_phase = lifecycle.phases
        rng = call.rng
        dispatch = rng.uniform(queue_phase.seconds.low, queue_phase.seconds.high)
        base = rng.uniform(run_phase.seconds.low, run_phase.seconds.high)
        if inputs is None:
            run = 0.1  # [V-3p] invalid input passes IN_PROGRESS briefly, then COMPLETED
        else:
            speed = float(self.contract.behaviour.raw["acceleration_speed"][inputs["acceleration"]])
            pixels = inputs["width"] * inputs["height"] / (1024 * 768)
            run = base * max(inputs["num_inference_steps"], 1) / 28 * (1 + 0.5 * (inputs["num_images"] - 1))
            run = max(0.2, run * pixels * speed)
            if inputs["seed"] is None:
                inputs["seed"] = rng.randrange(2**31)
        timeout = _float(call.request.headers.get("x-fal-request-timeout"))
        data: dict[str, Any] = {
            "kind": kind, "seq": next(self._seq), "inputs": inputs, "problems": problems,
            "size": (inputs["width"], inputs["height"]) if inputs else None,
            "dispatch": dispatch, "run": run, "timeout": timeout,
            "cancelled": False, "timed_out": False,
            "cancel_requested": False, "base": call.request.base_url,
            "webhook": webhook, "webhook_sent": False,
        }
        # The engine applies the task faults: never_finish makes the run endless, task_fail
        # marks it failed (it still ends COMPLETED: the error is at the result).
        task = call.new_task(
            data, phases=[(QUEUED, dispatch), (RUNNING, run)], polls=[p.polls for p in lifecycle.phases],
        )  # StoreFull -> the engine answers overloaded()
        data["run"] = task.durations[-1]
        if self.server.shared is not None:
            await self._enqueue_shared(task, call.now)
        else:
            if self._prune(call.now):
                self._reschedule(call.now)
            self._order.append(task)
            if self.server.lifecycle == "time":
                self._schedule(task, now=call.now)
        self._arm_webhook(task)
        return task

    async def _enqueue_shared(self, task: Task, now: float) -> None:
        """Take a place in the line every worker shares (a shared store): the same rules as
        the worker's own queue, kept in Redis."""
        shared = self.server.shared
        assert shared is not None
        queue, data = shared.runners(), task.data
        if self.server.lifecycle != "time":
            data["seq"], _ = await queue.enqueue(queued=data["kind"] == "queue")
            return
        retention = self.contract.behaviour.retention.task
        data["seq"], start, timed_out, _ = await queue.schedule(
            task.id, created=task.created_at, ready_at=task.created_at + data["dispatch"], run=data["run"],
            timeout=data["timeout"], runners=self._runners(), now=now,
            # an endless run holds its runner until the store forgets it (as the worker's queue)
            hold_until=task.created_at + (retention if retention is not None else math.inf))
        self._apply_start(task, start, timed_out)

    async def _leave_shared_line(self, task: Task, now: float) -> None:
        """A cancel with a shared store: the request leaves every worker's line, and those
        behind it start again as soon as a runner allows (their timelines are rewritten, the
        other workers told)."""
        shared = self.server.shared
        assert shared is not None
        queue = shared.runners()
        if self.server.lifecycle != "time":
            await queue.cancel(task.id, task.data["seq"])
            return
        moved = await queue.cancel_and_reschedule(task.data["seq"], now=now, runners=self._runners())
        found = await shared.load_tasks([rid for rid, _, _ in moved]) if moved else {}
        for rid, start, timed_out in moved:
            other = found.get(rid)
            if other is None:
                continue  # forgotten by the store meanwhile
            self._apply_start(other, start, timed_out)
            shared.announce(other)
            self._arm_webhook(other)

    def on_rescheduled(self, task: Task) -> None:
        self._arm_webhook(task)  # its end moved: its webhook waits for the new one

    async def _position(self, task: Task, now: float) -> int:
        """queue_position: from the worker's own queue, or the one a shared store holds."""
        shared = self.server.shared
        if shared is None:
            return self._queue_position(task, now)
        if self.server.lifecycle == "time":
            return await shared.runners().position(task.data["seq"], now)
        return await shared.runners().queued_ahead(task.data["seq"])

    def _runners(self) -> int | None:
        value = self.option("runners")
        return None if value == "unlimited" else int(value)

    def _schedule(self, task: Task, *, now: float, not_before: float = -math.inf) -> None:
        """Fix a queued request's wait: its dispatch delay, then the first free runner, in order."""
        data = task.data
        runners = self._runners()
        start = max(task.created_at + data["dispatch"], self._last_start, not_before)
        if runners is not None:
            while len(self._free) < runners:
                heapq.heappush(self._free, -math.inf)
            start = max(start, self._free[0])
        timeout = data["timeout"]
        self._apply_start(task, start, timeout is not None and start - task.created_at > timeout)
        if data["timed_out"]:
            self._timeouts.append(task)
            return
        if runners is not None:
            heapq.heapreplace(self._free, start + data["run"])
        self._last_start = start
        self._starts.append((start, data["seq"]))  # starts never decrease in submission order
        started = bisect.bisect_right(self._starts, (now, math.inf))
        if started > 4096:
            del self._starts[:started]  # they will never be counted as queued again

    def _apply_start(self, task: Task, start: float, timed_out: bool) -> None:
        """Fix a request's timeline: queued until ``start``, then its run (or its timeout)."""
        data = task.data
        data["start"], data["timed_out"] = start, timed_out
        if timed_out:
            # It never starts: it ends COMPLETED with request_timeout and holds no runner.
            task.states, task.durations = (QUEUED,), (data["timeout"],)
            task.polls_needed = task.polls_needed[:1]
            return
        task.states, task.durations = (QUEUED, RUNNING), (start - task.created_at, data["run"])
        lifecycle = self.contract.behaviour.lifecycle
        assert lifecycle is not None
        task.polls_needed = tuple(p.polls for p in lifecycle.phases)

    def _reschedule(self, now: float) -> None:
        """A cancel freed a slot: recompute the waits of every request not yet started."""
        if self.server.lifecycle != "time":
            return
        runners = self._runners()
        self._prune(now)
        busy: list[float] = []
        last_start = -math.inf
        waiting: list[Task] = []
        for task in self._order:
            if task.data["cancelled"] or task.finished_at(now) is not None:
                continue
            if self.server.tasks.get(task.id) is None:
                continue  # forgotten by the store: it holds no runner any more
            start = task.created_at + task.durations[0]
            if task.data["timed_out"] or start > now:
                waiting.append(task)
            else:
                busy.append(start + task.data["run"])
                last_start = max(last_start, start)
        self._free = []
        if runners is not None:
            self._free = sorted(busy) + [now] * max(runners - len(busy), 0)
            heapq.heapify(self._free)
        self._last_start = last_start
        self._starts = []
        self._timeouts = []
        for task in waiting:
            before = self._end_time(task)
            self._schedule(task, now=now, not_before=now)
            if self._end_time(task) != before:
                self._arm_webhook(task)

    def _prune(self, now: float) -> bool:
        """Drop finished requests from the head of the line; True if a forgotten one held a runner."""
        freed = False
        while self._order:
            head = self._order[0]
            if head.finished_at(now) is None:
                if self.server.tasks.get(head.id) is not None:
                    break
                freed = True  # a never-finishing request the store forgot after its retention
            self._order.popleft()
        if len(self._order) > 256 and self._order[-1].data["seq"] % 256 == 0:
            self._order = deque(t for t in self._order if t.finished_at(now) is None)
        if self._timeouts:
            self._timeouts = [t for t in self._timeouts if t.finished_at(now) is None]
        return freed

    async def _poll_step(self, task: Task, now: float) -> None:
        """--lifecycle polls: one poll, one step; leaving the queue needs a free runner."""
        runners = self._runners()
        shared = self.server.shared
        leaving = task.state(now) == QUEUED and task.polls + 1 >= task.polls_needed[0]
        if shared is not None:
            # Every worker's requests share the runners: the one that leaves the queue takes one.
            retention = self.contract.behaviour.retention.task
            if leaving and not await shared.runners().take(
                task.id, task.data["seq"], runners=runners, now=now,
                expiry=now + (retention if retention is not None else math.inf),
            ):
                return
        elif leaving and runners is not None and (
            sum(1 for t in self._order if t.state(now) == RUNNING) >= runners
        ):
            return
        was = task.state(now)
        task.poll(now)
        if was != DONE and task.state(now) == DONE:
            if shared is not None:
                await shared.runners().release(task.id)
            self._on_done(task)

    def _queue_position(self, task: Task, now: float) -> int:
        """[V] the number of requests ahead: earlier requests still IN_QUEUE."""
        seq = task.data["seq"]
        if self.server.lifecycle == "time" and not task.data["timed_out"]:
            # Starts follow submission order, so the queued requests ahead are the scheduled
            # ones starting after now and before this one.
            first = bisect.bisect_right(self._starts, (now, math.inf))
            mine = bisect.bisect_left(self._starts, (task.data["start"], seq))
            waiting = [t for t in self._timeouts if t.data["seq"] < seq and t.state(now) == QUEUED]
            return max(mine - first, 0) + len(waiting)
        ahead = 0
        for other in self._order:
            if other.data["seq"] >= seq:
                break
            if other.state(now) == QUEUED:
                ahead += 1
        return ahead

    def _end_time(self, task: Task) -> float:
        if task.ended is not None:
            return task.ended[1]
        return task.created_at + sum(task.durations)

    def _outcome(self, task: Task) -> str:
        data = task.data
        if data["cancelled"]:
            return "cancelled"
        if data["timed_out"]:
            return "timeout"
        if data["problems"]:
            return "invalid"
        return "failed" if task.failure is not None else "ok"

    def _find(self, request: MockRequest) -> Task | None:
        task = self.server.tasks.get(request.params["request_id"])
        if task is None or task.data.get("kind") != "queue":
            return None
        return task

    def _unknown(self, request: MockRequest) -> MockResponse:
        return self.error(request, 404, message="Request not found")  # [I] wording

    # --- bodies ------------------------------------------------------------------------

    def _status_body(
        self, request: MockRequest, task: Task, state: str, now: float, *, logs: bool,
        position: int | None = None,
    ) -> dict[str, Any]:
        base = f"{request.base_url}{APP}/requests/{task.id}"
        body: dict[str, Any] = {
            "status": state,
            "request_id": task.id,
            "response_url": base,
            "status_url": base + "/status",
            "cancel_url": base + "/cancel",
            # fal-client indexes data["logs"] for IN_PROGRESS and COMPLETED: always present.
            "logs": self._logs(task, state, now) if logs else None,
            "metrics": {},
        }
        if state == QUEUED:  # ``position``: counted by the caller (a shared store's queue)
            body["queue_position"] = self._queue_position(task, now) if position is None else position
        elif state == DONE:
            outcome = self._outcome(task)
            ran = outcome in ("ok", "failed")
            body["metrics"] = {"inference_time": round(task.data["run"], 4) if ran else None}
            if outcome in ("cancelled", "timeout"):
                # [I] how a cancelled or timed-out request reads is undocumented.
                body["error"] = CANCELLED if outcome == "cancelled" else "Request timed out"
                body["error_type"] = "request_cancelled" if outcome == "cancelled" else "request_timeout"
        return body

    def _logs(self, task: Task, state: str, now: float) -> list[dict[str, Any]]:
        if state == QUEUED or task.data["cancelled"] or task.data["timed_out"]:
            return []
        start = task.created_at + task.durations[0]
        run = task.data["run"]
        if state == DONE:
            done = 1.0
        elif task.mode == "polls":
            done = (task.polls - task.polls_needed[0]) / max(task.polls_needed[1], 1)
        else:
            done = 0.0 if math.isinf(run) else (now - start) / run
        inputs = task.data["inputs"]
        if inputs is None:
            return [_log("Input validation failed", start, "ERROR")]
        steps = max(inputs["num_inference_steps"], 1)
        span = 1.0 if math.isinf(run) else run
        lines = [_log("Starting generation", start)]
        for k in range(1, min(steps, int(done * steps)) + 1):
            lines.append(_log(f"Step {k}/{steps}", start + span * k / steps))
        if state == DONE:
            failed = task.failure is not None
            lines.append(_log("Generation failed" if failed else "Generation finished",
                              start + span, "ERROR" if failed else "INFO"))
        return lines

    def _answer(self, task: Task, base: str, call: Call | None = None) -> tuple[int, Any, dict[str, str]]:
        """What the result endpoint (or fal.run) answers for a finished request."""
        outcome = self._outcome(task)
        if outcome == "invalid":
            return 422, {"detail": task.data["problems"]}, {"X-Fal-Retryable": "false"}
        if outcome == "failed":
            detail = [{"loc": ["body"], "msg": "Image generation failed", "type": "runtime_error"}]  # [I]
            return 422, {"detail": detail}, {"X-Fal-Retryable": "false"}
        if outcome == "cancelled":
            # [V] a fal app answers a cancelled request 499 {"detail": "Request cancelled by the
            # client."} (fal.App's RequestCancelledException handler) and the result is the
            # app's answer; [I] a request removed from the queue reads the same.
            return 499, {"detail": CANCELLED}, {}
        if outcome == "timeout":
            body = {"detail": "Request timed out", "error_type": "request_timeout"}
            return 504, body, {"X-Fal-Error-Type": "request_timeout", "X-Fal-Request-Timeout-Type": "user"}
        return 200, self._output(task, base, call), {}

    def _output(self, task: Task, base: str, call: Call | None) -> dict[str, Any]:
        """The output; its links carry the link faults of the request that made the task and of
        ``call``, the one answered now (none for a webhook)."""
        inputs = task.data["inputs"]
        assert inputs is not None
        fmt = inputs["output_format"]
        images = []
        for index in range(inputs["num_images"]):
            spec = ImageSpec.of(inputs["width"], inputs["height"], fmt=fmt, prompt=inputs["prompt"],
                                seed=inputs["seed"], index=index)
            if inputs["sync_mode"]:
                url = f"data:{spec.content_type};base64," + base64.b64encode(render(spec)).decode()
            else:
                url = self.server.image_url(spec, base, task=task, faults=call.faults if call else ())
            images.append({"url": url, "width": spec.width, "height": spec.height,
                           "content_type": spec.content_type})
        return {
            "images": images,
            "timings": {"inference": round(task.data["run"], 4)},
            "seed": inputs["seed"],
            "has_nsfw_concepts": [False] * inputs["num_images"],
            "prompt": inputs["prompt"],
        }

    def _result_expired(self, task: Task, body: Any, now: float) -> bool:
        """[V] results of 10 KB or more are kept 6 min, not 1 h (the store forgets the rest)."""
        raw = self.contract.behaviour.raw
        finished = task.finished_at(now)
        if finished is None or now - finished <= float(raw["retention"]["large_result"]):
            return False
        return len(dumps(body)) >= int(raw["limits"]["large_result_bytes"])

    def _validation_error(self, problems: list[dict[str, Any]], request_id: str) -> MockResponse:
        return MockResponse.json({"detail": problems}, 422, {"x-fal-request-id": request_id,
                                                             "X-Fal-Retryable": "false"})

    # --- status stream -----------------------------------------------------------------

    async def _events(self, request: MockRequest, task: Task, logs: bool) -> AsyncIterator[bytes]:
        """The status stream: an event when the status or queue position changes and, with
        ``logs``, one as each log line appears, carrying only the new lines ([V] fal-js
        appends every event's ``logs`` to what it has; [I] so events carry new lines only).
        A comment line keeps a quiet stream alive ([V] docs: every 15 seconds)."""
        clock = self.server.clock
        # A ": ping" comment after each quiet ping_seconds (the grid restarts at every event).
        pings = Pings(clock, float(self.contract.behaviour.raw["stream"]["ping_seconds"]))
        last: tuple[str, int | None] | None = None
        sent = 0  # log lines already sent
        while True:
            now = clock.now()
            if self.server.lifecycle == "polls" and last is not None:
                await self._poll_step(task, now)  # with --lifecycle polls each event counts as a poll
            state = task.state(now)
            position = await self._position(task, now) if state == QUEUED else None
            body = self._status_body(request, task, state, now, logs=logs, position=position)
            fresh: list[dict[str, Any]] = []
            if logs:
                fresh = body["logs"][sent:]
                body["logs"] = fresh
            key = (state, body.get("queue_position"))
            if key != last or fresh:
                yield sse_event(body)
                last, sent = key, sent + len(fresh)
                pings.restart()
            if state == DONE:
                return
            if self.server.lifecycle == "polls":
                await asyncio.sleep(0.01)
                continue
            # Until the next state change, log line or start ahead (read again after each wait:
            # a cancel ahead of this request moves them), or until the state changed some other
            # way (a cancel).
            ahead = await self._shared_start_ahead(task, now)
            waiting = pings.until(partial(self._next_event_after, task, now, sent if logs else None,
                                          ahead),
                                  stop=partial(self._state_is_not, task, state))
            async with aclosing(waiting):
                async for _ in waiting:
                    yield sse_comment("ping")

    def _next_event_after(self, task: Task, floor: float, sent: int | None,
                          ahead: float | None = None) -> float:
        """When the stream next has something to say: a state change, the next log line (when
        ``sent`` lines went out), or a start ahead in the queue (at least 1 ms after ``floor``;
        ``ahead``: that start, read from a shared store)."""
        start_ahead = self._next_start_ahead(task, floor) if ahead is None else ahead
        at = min(self._next_change(task, floor), start_ahead,
                 math.inf if sent is None else self._next_line(task, floor, sent))
        return max(at, floor + 0.001)

    def _state_is_not(self, task: Task, state: str) -> bool:
        return task.state(self.server.clock.now()) != state

    def _next_change(self, task: Task, now: float) -> float:
        at = task.created_at
        for length in task.durations:
            at += length
            if at > now:
                return at
        return math.inf

    def _next_line(self, task: Task, now: float, sent: int) -> float:
        """When the next "Step k/n" log line appears (the lines are timed by _logs)."""
        inputs = task.data["inputs"]
        if task.state(now) != RUNNING or inputs is None or math.isinf(task.data["run"]):
            return math.inf
        steps = max(int(inputs["num_inference_steps"]), 1)
        k = sent  # line 0 is "Starting generation", line k is step k
        if k > steps:
            return math.inf
        return task.created_at + task.durations[0] + float(task.data["run"]) * k / steps

    async def _shared_start_ahead(self, task: Task, now: float) -> float | None:
        """With a shared store: when the next request ahead of a queued one starts (None: the
        worker's own queue knows)."""
        shared = self.server.shared
        if shared is None:
            return None
        if task.state(now) != QUEUED or self.server.lifecycle != "time" or task.data["timed_out"]:
            return math.inf
        return await shared.runners().next_start_ahead(task.data["seq"], now)

    def _next_start_ahead(self, task: Task, now: float) -> float:
        """When the next request ahead of a queued one starts (its queue_position drops)."""
        if task.state(now) != QUEUED or self.server.lifecycle != "time" or task.data["timed_out"]:
            return math.inf
        first = bisect.bisect_right(self._starts, (now, math.inf))
        if first < len(self._starts) and self._starts[first][1] < task.data["seq"]:
            return float(self._starts[first][0])
        return math.inf

    async def _partials(self, request: MockRequest, task: Task, call: Call) -> AsyncIterator[bytes]:
        """fal.run's stream: partial results while the model runs, then its output, then the end.

        [I] flux streams intermediate previews: each partial event has the output's shape with
        small data-URI previews (option stream_events=progress sends the docs' example shape,
        {"progress", "message"}). The last event is the output, or the model's error body.
        """
        clock = self.server.clock
        ping = float(self.contract.behaviour.raw["stream"]["ping_seconds"])
        count = int(self.contract.behaviour.raw["stream"]["partials"])
        if self.server.lifecycle == "polls":
            task.polls = int(sum(task.polls_needed))  # deterministic runs: everything at once
        start = task.created_at + task.durations[0]
        run = task.data["run"]
        points = [] if math.isinf(run) else [start + run * k / (count + 1) for k in range(1, count + 1)]
        quiet_since = clock.now()
        for index, at in enumerate(points):
            while self.server.lifecycle == "time" and clock.now() < at:
                await clock.sleep(min(at, quiet_since + ping) - clock.now())
                if clock.now() < at:
                    yield sse_comment("ping")
                    quiet_since = clock.now()
            yield sse_event(self._partial(task, (index + 1) / (count + 1)))
            quiet_since = clock.now()
        while task.finished_at(clock.now()) is None:  # never_finish: pings until the client leaves
            await clock.sleep(max(min(self._end_time(task), quiet_since + ping) - clock.now(), 0.001))
            if task.finished_at(clock.now()) is None and clock.now() >= quiet_since + ping:
                yield sse_comment("ping")
                quiet_since = clock.now()
        _, body, _ = self._answer(task, request.base_url, call)
        yield sse_event(body)

    def _partial(self, task: Task, done: float) -> dict[str, Any]:
        inputs = task.data["inputs"]
        assert inputs is not None
        if self.option("stream_events") == "progress":
            return {"progress": round(done, 4), "message": "Generating..."}  # [V] the docs' example
        images = []
        for index in range(inputs["num_images"]):
            width, height = max(inputs["width"] // 8, 1), max(inputs["height"] // 8, 1)
            spec = ImageSpec.of(width, height, fmt="jpeg", prompt=inputs["prompt"], seed=inputs["seed"],
                                index=index)
            url = "data:image/jpeg;base64," + base64.b64encode(render(spec)).decode()
            images.append({"url": url, "width": inputs["width"], "height": inputs["height"],
                           "content_type": "image/jpeg"})
        return {"images": images, "timings": {}, "seed": inputs["seed"],
                "has_nsfw_concepts": [False] * inputs["num_images"], "prompt": inputs["prompt"]}

    # --- webhooks ----------------------------------------------------------------------

    def _arm_webhook(self, task: Task) -> None:
        """(Re)start the job that posts the webhook when the request ends (provider time)."""
        old = self._waiters.pop(task.id, None)
        if old is not None:
            old.cancel()
        data = task.data
        if not data["webhook"] or data["webhook_sent"] or self.server.lifecycle != "time":
            return  # with --lifecycle polls the poll that completes the request sends it
        self._waiters[task.id] = self.server.spawn(self._webhook_when_done(task))

    async def _webhook_when_done(self, task: Task) -> None:
        clock = self.server.clock
        while task.finished_at(clock.now()) is None:
            end = self._end_time(task)
            if math.isinf(end):
                return
            await clock.sleep(max(end - clock.now(), 0.001))
        if self._waiters.get(task.id) is asyncio.current_task():
            del self._waiters[task.id]
        self._send_webhook(task)

    def _on_done(self, task: Task) -> None:
        """A request ended outside its timeline (cancel, or a poll in polls mode)."""
        if task.data["webhook"] and not task.data["webhook_sent"]:
            old = self._waiters.pop(task.id, None)
            if old is not None:
                old.cancel()
            self._send_webhook(task)

    def _send_webhook(self, task: Task) -> None:
        data = task.data
        if data["webhook_sent"] or not data["webhook"]:
            return
        data["webhook_sent"] = True
        status, body, _ = self._answer(task, data["base"])
        payload: dict[str, Any] = {"request_id": task.id, "gateway_request_id": task.id}
        if status == 200:
            payload.update({"status": "OK", "payload": body, "error": None})
        else:
            # [V] {"status":"ERROR","error":"Invalid status code: 422","payload":{"detail":[...]}}
            payload.update({"status": "ERROR", "error": f"Invalid status code: {status}", "payload": body})
        signing = self.option("webhook_signature")
        self.server.deliveries.send(
            "webhook", data["webhook"], payload, reference=task.id, policy=self._webhook_policy,
            faults=task.faults,
            sign=None if signing == "absent" else self._signer_for(task, bad=signing == "invalid"),
        )

    def _signer_for(self, task: Task, *, bad: bool) -> Callable[[bytes], dict[str, str]]:
        """[V] the four X-Fal-Webhook-* headers, signed at each attempt: ED25519 over
        request id, user id, timestamp (epoch seconds, provider time) and the body's SHA-256
        hex, joined by newlines; the signature in hex."""
        user = str(task.data.get("user_id") or _user_id(None))

        def sign(body: bytes) -> dict[str, str]:
            stamp = str(int(self.server.clock.now()))
            message = "\n".join((task.id, user, stamp, hashlib.sha256(body).hexdigest())).encode()
            signature = bytearray(self.webhook_signer.sign(message))
            if bad:
                signature[0] ^= 0xFF  # option webhook_signature=invalid: a receiver must refuse it
            return {"X-Fal-Webhook-Request-Id": task.id, "X-Fal-Webhook-User-Id": user,
                    "X-Fal-Webhook-Timestamp": stamp, "X-Fal-Webhook-Signature": signature.hex()}

        return sign


def _truthy(value: str | None) -> bool:
    # fal-client sends logs=true|false (httpx encodes the boolean), fal-js sends 1|0.
    return (value or "").strip().lower() in ("1", "true")


def _user_id(key: str | None) -> str:
    """[I] the X-Fal-Webhook-User-Id of a key: its id part (``Key <id>:<secret>``), else a
    stable digest of the key; "anonymous" for a request without one."""
    if not key:
        return "anonymous"
    if ":" in key:
        return key.split(":", 1)[0]
    return "user-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _float(value: str | None) -> float | None:
    """A finite, non-negative number of seconds; anything else is no timeout ([I])."""
    try:
        number = None if value is None else float(value)
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) and number >= 0 else None


def _log(message: str, at: float, level: str = "INFO") -> dict[str, Any]:
    stamp = datetime.fromtimestamp(at, tz=UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return {"message": message, "level": level, "source": "USER", "timestamp": stamp}


def _detail(issue: SchemaIssue, data: dict[str, Any]) -> dict[str, Any]:
    """A JSON-schema issue as the pydantic (v2) entry a FastAPI app answers in ``detail``."""
    loc: list[str | int] = ["body"]
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", issue.path):
        loc.append(part[0] if part[0] else int(part[1]))
    kind = issue.validator
    if kind == "required":
        return {"type": "missing", "loc": loc, "msg": "Field required", "input": issue.instance}
    if kind == "type":
        want = next((t for t in _PYDANTIC_TYPES if issue.message.endswith(f"'{t}'")), "object")
        type_, msg = _PYDANTIC_TYPES[want]
        return {"type": type_, "loc": loc, "msg": msg, "input": issue.instance}
    if kind in ("maximum", "minimum"):
        bound = _bound(issue.message)
        key, word = ("le", "less") if kind == "maximum" else ("ge", "greater")
        return {"type": f"{word}_than_equal", "loc": loc, "input": issue.instance,
                "msg": f"Input should be {word} than or equal to {bound}", "ctx": {key: bound}}
    if kind == "enum":
        choices = re.findall(r"'([^']*)'", issue.message.split(" is not one of ", 1)[-1])
        quoted = [f"'{c}'" for c in choices]
        expected = (", ".join(quoted[:-1]) + " or " + quoted[-1]) if len(quoted) > 1 else "".join(quoted)
        return {"type": "literal_error", "loc": loc, "msg": f"Input should be {expected}",
                "input": issue.instance, "ctx": {"expected": expected}}
    if kind == "anyOf" and loc[-1] == "image_size":
        return {"type": "union_tag_invalid", "loc": loc, "input": issue.instance,
                "msg": "Input should be one of square_hd, square, portrait_4_3, portrait_16_9, "
                       "landscape_4_3, landscape_16_9, or an object with integer width and height "
                       "between 1 and 4096"}
    return {"type": "value_error", "loc": loc, "msg": issue.message, "input": issue.instance}


def _bound(message: str) -> int | float:
    number = float(message.rsplit(" ", 1)[-1])
    return int(number) if number.is_integer() else number
