"""AceData Cloud Flux: sync images, async tasks retrieved by POST, callbacks, NDJSON.

Seed 001 (docs.acedata.cloud, Flux Images) and shared/reference/providers.md §2. A request
waits for its images unless it says ``async: true`` or gives a ``callback_url``; then it gets
``{"task_id"}`` at once and the task record is read with ``POST /flux/tasks``. The record has
no status field: while pending its ``response`` is ``{"success": true, "task_id"}`` without
``data`` (the SDK's own fixtures; option pending_record=absent: no ``response``, Nexior's
reading). ``accept: application/x-ndjson`` gets the final body as one line (option
ndjson=progress: progress lines first); ``accept: text/event-stream`` the same objects as SSE
``data:`` events, the frames the official SDK's ``request_stream`` reads.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .engine import (
    Body,
    BodyError,
    Call,
    DeliveryPolicy,
    FaultSpec,
    ImageSpec,
    MockRequest,
    MockResponse,
    Provider,
    Route,
    Task,
    compact,
    ndjson_line,
    refusal,
    route,
    sse_event,
    uuid4_text,
)

_WXH = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_NDJSON = "application/x-ndjson"
_SSE = "text/event-stream"


_API_ID = str(uuid.UUID(bytes=hashlib.md5(b"flux/images").digest(), version=4))


@functools.lru_cache(maxsize=1024)
def _account_ids(token: str) -> dict[str, str]:
    """The application, credential and user ids a token stands for: stable, derived, cached."""
    token_hash = hashlib.sha256(token.encode()).digest()
    return {
        "application_id": str(uuid.UUID(bytes=token_hash[:16], version=4)),
        "credential_id": str(uuid.UUID(bytes=token_hash[16:], version=4)),
        "user_id": str(uuid.UUID(bytes=hashlib.md5(token_hash).digest(), version=4)),
    }


class AceDataProvider(Provider):
    """The AceData Cloud Flux API: ``POST /flux/images`` and ``POST /flux/tasks``."""

    id = "acedata"

    # --- routes ----------------------------------------------------------------------

    @route("POST", "/flux/images", operation="createFluxImages")
    async def images(self, request: MockRequest, call: Call) -> MockResponse:
        body = call.body  # checked by the engine with refuse() below
        sent = dict(request.json_object())  # the record echoes the request as sent
        model, width, height, count = self._plan(body)
        callback_url = body.get("callback_url")
        task = call.new_task(compact({
            "request": sent,
            "model": model,
            "width": width,
            "height": height,
            "count": count,
            "seed": call.rng.randrange(1, 2**31),
            "inference": round(call.rng.uniform(2.5, 6.0), 3),
            "trace_id": self._uuid(),
            "token": self.contract.behaviour.auth.key_of(request.headers.get("Authorization")) or "",
            "base_url": request.base_url,
        }))
        if isinstance(callback_url, str):
            self._schedule_callback(task, callback_url)
        stream = _stream_kind(request.headers.get("Accept", ""))
        if body.get("async") is True or isinstance(callback_url, str):
            accepted: dict[str, Any] = {"task_id": task.id}
            if self.option("async_response") == "full":
                accepted = {"success": True, "task_id": task.id, "trace_id": task.data["trace_id"]}
            if stream is not None:
                return MockResponse.stream(_lines([_frame(stream, accepted)]), stream)
            return MockResponse.json(accepted)
        if stream is not None:
            return MockResponse.stream(self._stream(task, stream), stream)
        if not await self._wait(task):
            return self.error(request, 504, "timeout")
        outcome = self._outcome(task, call.faults)
        if outcome["success"]:
            return MockResponse.json(outcome)
        return self._failure_response(request, task)

    @route("POST", "/flux/tasks", operation="retrieveFluxTasks")
    async def tasks(self, request: MockRequest, call: Call) -> MockResponse:
        body = call.body
        if body["action"] == "retrieve":
            task = call.tasks.get(body["id"])
            if task is None:
                return self.error(request, 404, "not_found", f"The task {body['id']} does not exist.")
            state = task.poll(call.now)  # counted once, whether the record is made or kept

            def record() -> MockResponse:
                return MockResponse.json(self._record(task, call, count=False))
            if state in task.terminal:  # a finished task's record never changes again
                return call.answer_once(task, record)
            return record()
        found = [t for t in (call.tasks.get(i) for i in body.get("ids", [])) if t is not None]
        if "ids" not in body:
            # A listing (Nexior's, [V]) shows the caller's own tasks, newest first.
            token = self.contract.behaviour.auth.key_of(request.headers.get("Authorization")) or ""
            mine = [t for t in call.tasks if t.data.get("token") == token]
            found = sorted(reversed(mine), key=lambda t: -t.created_at)
        low, high = body.get("created_at_min", -math.inf), body.get("created_at_max", math.inf)
        found = [t for t in found if low <= t.created_at <= high]
        offset = int(body.get("offset", 0))
        limit = body.get("limit")
        found = found[offset : None if limit is None else offset + int(limit)]
        items = [self._record(t, call) for t in found]
        return MockResponse.json({"items": items, "count": len(items)})

    def task_ids(self, request: MockRequest, route: Route) -> list[str] | None:
        """Task ids travel in the body of ``/flux/tasks``: ``id``, ``ids``, or none (a listing)."""
        if route.operation != "retrieveFluxTasks":
            return []
        try:
            body = request.json_object()
        except BodyError:
            return []
        if body.get("action") == "retrieve":
            return [body["id"]] if isinstance(body.get("id"), str) else []
        ids = body.get("ids")
        if ids is None:
            return None
        return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []

    # --- the provider's own answers ------------------------------------------------------

    def error(
        self, request: MockRequest, status: int, code: str | int | None = None,
        message: str | None = None, headers: dict[str, str] | None = None,
    ) -> MockResponse:
        """``{"success": false, "error": {"code", "message"}, "trace_id"}`` [V] the guide's example."""
        return MockResponse.json(self._error_body(status, code, message), status, headers)

    def _error_body(self, status: int, code: str | int | None, message: str | None) -> dict[str, Any]:
        spec = self.error_spec(status)
        code = str(code if code is not None else spec.code or "api_error")
        known = self.contract.behaviour.raw.get("error_codes", {}).get(status, {})
        message = message or known.get(code) or spec.message
        return {"success": False, "error": {"code": code, "message": message}, "trace_id": self._uuid()}

    def auth_error(self, request: MockRequest, reason: str) -> MockResponse:
        if reason == "missing":
            return self.error(request, 400, "no_token")
        return self.error(request, 401, "invalid_token")

    def too_large(self, request: MockRequest, limit: int) -> MockResponse:
        return self.error(request, 400, "bad_request", f"The request body exceeds {limit} bytes.")

    def overloaded(self, request: MockRequest) -> MockResponse:
        return self.error(request, 500, "busy")

    def describe_task(self, task: Any) -> dict[str, Any]:
        keep = ("model", "width", "height", "count", "seed")
        return {k: task.data[k] for k in keep} | {"prompt": task.data["request"]["prompt"]}

    # --- validation ------------------------------------------------------------------

    def _models(self) -> dict[str, Any]:
        models: dict[str, Any] = self.contract.behaviour.raw["models"]
        return models

    def normalise(self, operation: str, data: dict[str, Any]) -> dict[str, Any]:
        if (operation == "createFluxImages" and data.get("model") == "generate"
                and self.option("model_generate") == "flux-dev"):
            data["model"] = "flux-dev"  # quirk seed-example-model-generate
        return data

    def refuse(self, request: MockRequest, body: Body) -> MockResponse | None:
        """A 400 bad_request: "<field> is invalid. <why>"."""
        if body.error is not None:
            return self.error(request, 400, "bad_request", str(body.error))
        assert body.data is not None
        problem = None
        if body.operation == "createFluxImages":
            # The contract's schema holds every rule; the rules below say the same in AceData's
            # words ("size is invalid. ..."), so they speak first whenever the types allow them to.
            problem = self._rule_problem(body.data)
        problem = problem or _problem(body.issues)
        return None if problem is None else self.error(request, 400, "bad_request", problem)

    def _rule_problem(self, body: dict[str, Any]) -> str | None:
        """The per-model rules (edit, count, size), for a body whose fields have the right types."""
        action, model = body.get("action"), body.get("model")
        if action not in ("generate", "edit") or not isinstance(body.get("prompt"), str):
            return None
        model = model or ("flux-kontext-pro" if action == "edit" else "flux-dev")
        if not isinstance(model, str) or model not in self._models():
            return None
        if action == "edit":
            if not self._models()[model].get("edit"):
                return f"model is invalid. edit takes flux-kontext-pro or flux-kontext-max, not {model}."
            image_url = body.get("image_url")
            if not isinstance(image_url, str) or not re.match(r"^(https?://|data:image/)", image_url):
                return "image_url is invalid. edit needs the http(s) URL of the image to edit."
        count = body.get("count", 1)
        low, high = self.contract.behaviour.limits["count"]
        if (action == "generate" and isinstance(count, int | float) and not isinstance(count, bool)
                and (count != int(count) or not low <= count <= high)):
            return f"count is invalid. It must be a whole number from {low} to {high}; got {count!r}."
        size = body.get("size")
        if isinstance(size, str) and self._dimensions(model, size) is None:
            return f"size is invalid. {self._size_rule(model)}; got {size!r}."
        return None

    def _size_rule(self, model: str) -> str:
        kind = self._models()[model]["size"]
        rule = self.contract.behaviour.raw["sizes"][kind]
        if kind == "ratio":
            return f"{model} takes an aspect ratio, one of {', '.join(rule['choices'])}"
        return (
            f"{model} takes WxH with each side from {rule['min']} to {rule['max']}"
            f" and a multiple of {rule['multiple']}"
        )

    def _dimensions(self, model: str, size: str) -> tuple[int, int] | None:
        """Pixel size of ``size`` for ``model``, or None when the model does not take it."""
        info = self._models()[model]
        rule = self.contract.behaviour.raw["sizes"][info["size"]]
        if info["size"] == "ratio":
            if size not in rule["choices"]:
                return None
            # A ratio is rendered at the model's area, sides rounded to multiples of 32 [I].
            w, h = (int(x) for x in size.split(":"))
            area = float(info.get("megapixels", 1.0)) * 1024 * 1024
            return _round32(math.sqrt(area * w / h)), _round32(math.sqrt(area * h / w))
        m = _WXH.match(size)
        if m is None:
            return None
        width, height = int(m.group(1)), int(m.group(2))
        for side in (width, height):
            if not rule["min"] <= side <= rule["max"] or side % rule["multiple"]:
                return None
        return width, height

    def _plan(self, body: dict[str, Any]) -> tuple[str, int, int, int]:
        action = body["action"]
        model = body.get("model") or ("flux-kontext-pro" if action == "edit" else "flux-dev")
        kind = self._models()[model]["size"]
        size = body.get("size") or self.contract.behaviour.raw["sizes"][kind]["default"]
        dims = self._dimensions(model, size)
        assert dims is not None
        count = 1 if action == "edit" else int(body.get("count", 1))
        return model, dims[0], dims[1], count

    # --- tasks, bodies, timing -------------------------------------------------------

    def _end(self, task: Task) -> float:
        """When (provider time) the task's generation ends; inf when it never does."""
        return task.created_at + sum(task.durations)

    def _finish(self, task: Task) -> None:
        """With --lifecycle polls a task moves per poll; a sync answer or callback ends it."""
        if not task.is_terminal(self.server.clock.now()):
            task.end(task.final, self.server.clock.now())

    async def _wait(self, task: Task) -> bool:
        """Hold a sync request for the generation time; False when it would never end."""
        clock = self.server.clock
        limit = float(self.contract.behaviour.limits["sync_timeout"])
        left = self._end(task) - clock.now()
        if left > limit:
            await clock.sleep(limit)
            return False
        await clock.sleep(left)
        self._finish(task)
        return True

    def _outcome(self, task: Task, faults: Iterable[FaultSpec] = ()) -> dict[str, Any]:
        """The final body: the sync success body, or the failure body of a failed task."""
        data = task.data
        if task.final != task.terminal[0]:  # terminal: [succeeded, failed]
            failure = self.contract.behaviour.raw["failure"]
            return {
                "success": False, "task_id": task.id, "trace_id": data["trace_id"],
                "error": {"code": failure["code"], "message": failure["message"]},
            }
        prompt = data["request"]["prompt"]
        items = []
        for i in range(data["count"]):
            spec = ImageSpec.of(data["width"], data["height"], prompt=prompt, seed=data["seed"], index=i)
            url = self.server.image_url(spec, data["base_url"], task=task, faults=faults)
            timings: Any = {"inference": data["inference"]}
            if self.option("timings") == "timestamp":
                timings = int(self._end(task))
            items.append({
                "prompt": prompt,
                "image_url": url,
                "seed": data["seed"] + i,
                "timings": timings,
            })
        return {"success": True, "task_id": task.id, "trace_id": data["trace_id"], "data": items}

    def _failure_response(self, request: MockRequest, task: Task) -> MockResponse:
        failure = self.contract.behaviour.raw["failure"]
        return self.error(request, int(failure["status"]), failure["code"], failure["message"])

    def _record(self, task: Task, call: Call, *, count: bool = True) -> dict[str, Any]:
        """The task record [V]: ids, request, and `response` once the task has ended."""
        now = call.now
        if count:
            task.poll(now)
        account = _account_ids(task.data["token"])
        # Keys in the reference's order [V] (the record example in providers.md §2).
        record: dict[str, Any] = {
            "_id": hashlib.sha256(task.id.encode()).hexdigest()[:24],
            "id": task.id,
            "api_id": _API_ID,
            "application_id": account["application_id"],
            "created_at": round(task.created_at, 3),
            "credential_id": account["credential_id"],
            "user_id": account["user_id"],
            "trace_id": task.data["trace_id"],
            "request": task.data["request"],
        }
        finished = task.finished_at(now)
        if finished is None:
            if self.option("pending_record") == "stub":
                record["response"] = {"success": True, "task_id": task.id}
            return record
        record["response"] = self._outcome(task, call.faults)
        record["finished_at"] = round(finished, 3)
        record["elapsed"] = round(finished - task.created_at, 3)
        return record

    async def _stream(self, task: Task, kind: str) -> AsyncIterator[bytes]:
        """The full response as the last line or event; progress ones first with ndjson=progress."""
        clock = self.server.clock
        interval = float(self.contract.behaviour.raw["ndjson"]["progress_interval"])
        limit = float(self.contract.behaviour.limits["sync_timeout"])
        end = min(self._end(task), task.created_at + limit)
        progress = self.option("ndjson") == "progress"
        while clock.now() < end:
            if progress:
                done = (clock.now() - task.created_at) / max(self._end(task) - task.created_at, 1e-9)
                yield _frame(kind, {
                    "task_id": task.id, "trace_id": task.data["trace_id"],
                    "progress": min(99, int(done * 100)),
                })
            await clock.sleep(min(interval, end - clock.now()))
        if self._end(task) > end:
            yield _frame(kind, self._error_body(504, "timeout", None))
            return
        self._finish(task)
        outcome = self._outcome(task)
        if not outcome["success"]:
            outcome = {k: v for k, v in outcome.items() if k != "task_id"}
        yield _frame(kind, outcome)

    # --- callbacks -------------------------------------------------------------------

    def _schedule_callback(self, task: Task, url: str) -> None:
        """POST the final body to ``url`` when the task ends (a background job on the clock)."""
        policy = DeliveryPolicy.from_contract(self.contract.behaviour.raw.get("callbacks"))
        deliveries = self.server.deliveries
        if refusal(url, self.server.allow_hosts) is not None:
            # Refused at once (recorded with its reason); nothing would ever reach it.
            deliveries.send("callback", url, b"", reference=task.id, policy=policy)
            return
        if math.isinf(self._end(task)):
            return  # never_finish: the task never ends, so no callback is ever sent

        async def deliver() -> None:
            await self.server.clock.sleep(self._end(task) - self.server.clock.now())
            self._finish(task)
            deliveries.send(
                "callback", url, self._outcome(task), reference=task.id, policy=policy,
                faults=task.faults,
            )

        self.server.spawn(deliver())

    # --- helpers ---------------------------------------------------------------------

    def _uuid(self) -> str:
        return uuid4_text(self.server.rng.getrandbits(128))


def _problem(issues: list[Any]) -> str | None:
    """The first schema issue in AceData's words: "<field> is invalid. <why>"."""
    if not issues:
        return None
    issue = issues[0]
    field = issue.path.removeprefix("$").lstrip(".").split(".")[0].split("[")[0]
    if issue.validator == "required":
        field = issue.message.split("'")[1]
    return f"{field or 'request'} is invalid. {issue.message}"


def _round32(value: float) -> int:
    return max(32, round(value / 32) * 32)


def _stream_kind(accept: str) -> str | None:
    """The streamed media type a request's Accept asks for (NDJSON first, as documented)."""
    accept = accept.lower()
    if _NDJSON in accept:
        return _NDJSON
    if _SSE in accept:
        return _SSE
    return None


def _frame(kind: str, obj: Any) -> bytes:
    """One object as an NDJSON line or as an SSE ``data:`` event (quirk sdk-stream-reads-sse)."""
    return ndjson_line(obj) if kind == _NDJSON else sse_event(obj)


async def _lines(lines: list[bytes]) -> AsyncIterator[bytes]:
    for line in lines:
        yield line
