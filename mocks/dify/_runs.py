"""A Dify workflow run over time: its timeline, the blocking answer, the event stream, and the
bodies they carry (run summary, node events, signed file links).

A run is a :class:`~imagegen_conformance.mocks.engine.Task` timeline, one phase per executed
node; nothing runs in the background. A blocking answer waits on the clock until the run ends
(or the gateway cuts it); a stream sleeps on the clock between its events and pings every 10 s
(the engine's :class:`Pings`). Output files are served under Dify's own HMAC-signed
``/files/tools/{id}.png`` links (the engine's signer; their lifetime is ``link_lifetime()``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import astuple
from functools import lru_cache, partial
from typing import Any

from ..engine import (
    Call,
    ImageSpec,
    MockRequest,
    MockResponse,
    Pings,
    Provider,
    ScaledClock,
    Shelf,
    Task,
    render,
    uuid4_text,
)
from ._workflow import Node, Workflow

__all__ = ["PING", "SSE_TYPE", "DifyRuns", "dify_event", "dify_json", "end_user"]

SSE_TYPE = "text/event-stream; charset=utf-8"  # [V] Flask appends the charset
PING = b"event: ping\n\n"  # [V] the bare keep-alive line, no data
_STREAM_ERROR = "Internal Server Error, please contact support."  # [V] the converter's fallback text
# [V] base_app_generate_response_converter._error_to_stream_response: the errors a stream names
# by their own code (all 400); any other failure is written as internal_server_error, 500.
_STREAM_CODES = frozenset({
    "invalid_param", "provider_not_initialize", "provider_quota_exceeded",
    "model_currently_not_support", "completion_request_error",
})
_NGINX_504 = (b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
              b"<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n"
              b"</body>\r\n</html>\r\n")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # a signed link's Unix time, ASCII digits only
_CLOCK_SKEW = 60  # seconds a link's timestamp may lie ahead of the mock's clock


def dify_json(data: Any) -> bytes:
    """JSON as Dify writes it: ``json.dumps`` defaults ([V] libs/helper.py and the event
    stream), so non-ASCII text is ``\\uXXXX`` and the separators are ", " and ": "."""
    return json.dumps(data).encode()


def dify_event(data: Any) -> bytes:
    """One event as Dify's generator writes it: ``data: <json.dumps>`` and a blank line [V]."""
    return b"data: " + dify_json(data) + b"\n\n"


class DifyRuns(Provider):
    """The runs of a Dify workflow app; :class:`DifyProvider` adds the routes and the envelope."""

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.workflow = Workflow.load()
        self._codes: dict[str, Any] = dict(self.contract.behaviour.raw.get("error_codes") or {})
        self._max_files = int(self.contract.behaviour.limits.get("max_files", 10_000))
        # Bounded, and shared by every worker of a shared store (serve --workers).
        self._files: Shelf = server.shelf(  # tool file id -> image
            "files", limit=self._max_files, encode=astuple, decode=lambda v: ImageSpec(*v))
        self._runs_by_task: Shelf = server.shelf(  # task_id -> workflow_run_id
            "runs", limit=int(self.contract.behaviour.limits.get("max_tasks", 100_000)))
        self._workflows = {self.workflow.id: self.workflow}  # every workflow a run may hold
        # The app's run numbers (sequence_number), one sequence for every worker of a shared store.
        self._sequence = server.counter("runs")
        # Futures of the blocking answers and streams now waiting on a run: stop wakes them.
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        # Finished runs' detail answers, kept as their bytes around the file links (which are
        # signed again on each answer): run id -> (what the answer depends on, parts, links).
        self._details: dict[str, tuple[tuple[Any, ...], list[bytes], list[tuple[str, str]]]] = {}
        self._capture: list[tuple[str, str]] | None = None  # links met while a body is kept
        self._capture_token = f"dify-link-{os.urandom(16).hex()}-"  # stands for a link, for now

    def use_workflow(self, workflow: Workflow | str | os.PathLike[str] | Mapping[str, Any]) -> None:
        """Run another workflow from now on: a :class:`Workflow`, a file path, or a mapping."""
        if isinstance(workflow, Workflow):
            self.workflow = workflow
        elif isinstance(workflow, Mapping):
            self.workflow = Workflow.from_dict(workflow)
        else:
            self.workflow = Workflow.load(workflow)
        self._workflows[self.workflow.id] = self.workflow

    @property
    def live_streams(self) -> int:
        """How many blocking answers or streams are waiting on a run right now."""
        return sum(len(w) for w in self._waiters.values())

    def _stop_run(self, task: Task, now: float) -> None:
        """End a run ``stopped`` now; the answers waiting on it wake up and say so."""
        if task.end("stopped", now):
            self.on_ended(task)

    def on_ended(self, task: Task) -> None:
        """A run was stopped (here, or through another worker): its waiting answers wake."""
        for fut in self._waiters.get(task.id, ()):
            fut.get_loop().call_soon_threadsafe(_wake, fut)

    def encode_data(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "workflow": data["workflow"].id}  # a shared store holds its id

    def decode_data(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "workflow": self._workflows.get(data["workflow"], self.workflow)}

    def _forget_runs(self) -> None:
        self._details.clear()
        self._files.clear()
        self._runs_by_task.clear()  # (the server resets the run numbers)

    # --- runs ------------------------------------------------------------------------

    def _new_run(self, call: Call, inputs: dict[str, Any], user: str, streaming: bool) -> Task:
        rng, nodes = call.rng, self.workflow.nodes
        durations = [rng.uniform(*n.seconds) for n in nodes]
        # The faults act on the first working node: it fails, or it never finishes.
        work = next((i for i, n in enumerate(nodes) if n.type not in ("start", "end")), len(nodes) - 1)
        run_id = uuid4_text(rng.getrandbits(128))
        task_id = uuid4_text(rng.getrandbits(128))
        data: dict[str, Any] = {
            "task_id": task_id,
            "user": user,
            "inputs": inputs,
            "streaming": streaming,
            "seed": rng.getrandbits(31),
            "execution_ids": [uuid4_text(rng.getrandbits(128)) for _ in nodes],
            "files": {},
            "workflow": self.workflow,  # the run keeps its workflow if another is loaded later
            "sequence_number": next(self._sequence),  # [V] the seed's release numbers an app's runs
        }
        # Runs are time-driven whatever --lifecycle says: blocking answers and streams wait on them.
        task = call.new_task(
            data, task_id=run_id, phases=[("running", d) for d in durations], polls=[1] * len(nodes),
            work=work, mode="time",
        )
        fail: str | None = None
        if task.failure is not None:
            kind, _, code = (task.failure or "node").partition(":")
            fail = "error" if kind == "error" else "node"
            data["error_code"] = code or "internal_server_error"
        else:
            data["error_code"] = "internal_server_error"
        data["fail"], data["fail_at"] = fail, work if fail else None
        for i, node in enumerate(nodes[: len(task.durations)]):
            if node.images and not (fail and i == work):
                data["files"][node.id] = self._draw(node, inputs, data["seed"], rng)
        self._runs_by_task[task_id] = run_id
        return task

    def _draw(self, node: Node, inputs: Mapping[str, Any], seed: int, rng: Any) -> list[str]:
        ids = []
        for index in range(int((node.images or {}).get("count", 1))):
            file_id = uuid4_text(rng.getrandbits(128))
            self._files[file_id] = _image(node, inputs, seed, index)
            ids.append(file_id)
        return ids

    def _file_spec(self, task: Task, file_id: str) -> ImageSpec | None:
        """A run's file: this worker's record, or drawn again from the run (a shared store's
        other worker made it, and a run detail names it before any download did)."""
        spec = self._files.get(file_id)
        if spec is not None:
            return spec  # type: ignore[no-any-return]
        nodes = {n.id: n for n in task.data["workflow"].nodes}
        for node_id, ids in task.data["files"].items():
            if file_id in ids and node_id in nodes:
                return _image(nodes[node_id], task.data["inputs"], task.data["seed"], ids.index(file_id))
        return None

    def _schedule(self, task: Task) -> list[tuple[Node, float, float]]:
        """(node, started, finished) in provider time for each node the run executes."""
        out, at = [], task.created_at
        for node, length in zip(task.data["workflow"].nodes, task.durations, strict=False):
            out.append((node, at, at + length))
            at += length
        return out

    async def _blocking(self, request: MockRequest, task: Task) -> MockResponse:
        clock = self.server.clock
        limit = self.option("gateway_timeout")
        if limit == "nginx":  # [V] a docker-compose install's nginx: proxy_read_timeout
            seconds = float(self.contract.behaviour.limits.get("nginx_read_timeout", 3600))
        else:
            seconds = math.inf if limit == "off" else float(limit)
        cut = task.created_at + seconds
        end = task.created_at + sum(task.durations)
        while _status(task, clock.now()) == "running":
            if clock.now() >= cut:
                if limit == "nginx":  # nginx's own page [I] (its version left out)
                    return MockResponse.raw(_NGINX_504, 504, "text/html")
                # [V] Dify Cloud's Cloudflare gives up after 100 s (option gateway_timeout=100);
                # its answer is 524 [I] body.
                return MockResponse.raw(b"error code: 524", 524, "text/plain; charset=UTF-8")
            await self._wait_until(task, min(end, cut))
        summary = self._summary(request, task, clock.now())
        if task.data["fail"] == "error" and summary["status"] == "failed":
            return self.error(
                request, self._error_status(task), task.data["error_code"], self._error_text(task)
            )
        keys = ("id", "workflow_id", "status", "outputs", "error", "elapsed_time", "total_tokens",
                "total_steps", "created_at", "finished_at")
        body = {"task_id": task.data["task_id"], "workflow_run_id": task.id,
                "data": {k: summary[k] for k in keys}}
        # [V] libs/helper.py compact_generate_response: json.dumps, no newline; mimetype
        # application/json in the seed's release, "application/json; charset=utf-8" later.
        kind = "application/json" if self._seed_release else "application/json; charset=utf-8"
        return MockResponse.raw(dify_json(body), 200, kind)

    async def _stream(self, request: MockRequest, task: Task) -> AsyncIterator[bytes]:
        """The run's events as the clock reaches them, with a ping every 10 s of quiet or not."""
        interval = float(self.contract.behaviour.limits.get("ping_interval", 10))
        pings = Pings(self.server.clock, interval, sleep=partial(self._wait_until, task))
        opening: dict[str, Any] = {"id": task.id, "workflow_id": task.data["workflow"].id}
        if self._seed_release:
            opening["sequence_number"] = task.data["sequence_number"]
        opening.update({"inputs": task.data["inputs"], "created_at": int(task.created_at)})
        if not self._seed_release:
            opening["reason"] = "initial"  # [V] "initial" | "resumption" (after a pause)
        yield self._event(task, "workflow_started", opening)
        previous: str | None = None
        for index, (node, started, finished) in enumerate(self._schedule(task)):
            for when, phase in ((started, "start"), (finished, "finish")):
                stopped = partial(self._stopped_before, task, when)
                async with aclosing(pings.until(when, stop=stopped)) as waiting:  # unless stopped
                    async for _ in waiting:
                        yield PING
                if stopped():
                    if phase == "finish":
                        yield self._node_event(request, task, index, node, previous, "stopped")
                    yield self._finished_event(request, task)
                    return
                if phase == "finish" and task.data["fail"] == "error" and index == task.data["fail_at"]:
                    yield dify_event(self._error_event(task))
                    return
                status = "started" if phase == "start" else (
                    "failed" if index == task.data["fail_at"] else "succeeded"
                )
                yield self._node_event(request, task, index, node, previous, status)
            previous = node.id
        yield self._finished_event(request, task)

    @property
    def _seed_release(self) -> bool:
        """Whether the answers are the seed's release's (option release=seed, the default)."""
        return self.option("release") == "seed"

    @staticmethod
    def _event(task: Task, event: str, data: Mapping[str, Any]) -> bytes:
        """A run's event: [V] the converter writes event and workflow_run_id first, then the
        stream response's own task_id (and workflow_run_id again, in place) and data."""
        return dify_event({"event": event, "workflow_run_id": task.id,
                           "task_id": task.data["task_id"], "data": data})

    def _error_event(self, task: Task) -> dict[str, Any]:
        """The streamed ``error`` event. [V] source (workflow/generate_response_converter.py,
        two releases read): event and workflow_run_id, then the error's code, status and message
        (code, message, status for the 500 fallback); no task_id. [V] the docs list task_id and
        no workflow_run_id instead (option error_event=docs)."""
        code, status, text = self._stream_error(task)
        if self.option("error_event") == "docs":
            return {"event": "error", "task_id": task.data["task_id"], "message": text,
                    "code": code, "status": status}
        head = {"event": "error", "workflow_run_id": task.id}
        if status >= 500:
            return {**head, "code": code, "message": text, "status": status}
        return {**head, "code": code, "status": status, "message": text}

    def _stream_error(self, task: Task) -> tuple[str, int, str]:
        """(code, status, message) of the failure a ``task_fail:error:CODE`` fault injects into
        a stream: a code the converter knows keeps its own, any other is its 500 fallback."""
        code = task.data["error_code"]
        if code in _STREAM_CODES:
            return code, self._error_status(task), self._error_text(task)
        return "internal_server_error", 500, _STREAM_ERROR

    async def _wait_until(self, task: Task, when: float) -> None:
        """Sleep on the clock until ``when`` (provider time), or until the run is stopped."""
        clock = self.server.clock
        delay = min(when - clock.now(), 1e9)
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters.setdefault(task.id, set())
        waiters.add(stop)
        try:
            if isinstance(clock, ScaledClock):
                # One future, woken by a timer (as the clock's own sleep times it) or the stop.
                timer = loop.call_later(delay / clock.scale, _wake, stop)
                try:
                    await stop
                finally:
                    timer.cancel()
            else:  # a manual clock (or another): its own sleep, raced against the stop
                sleeper = asyncio.ensure_future(clock.sleep(delay))
                sleeper.set_name(f"imagegen_conformance.mocks.dify:wait:{task.id}")
                try:
                    await asyncio.wait({sleeper, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
        finally:
            stop.cancel()
            waiters.discard(stop)
            if not waiters:
                self._waiters.pop(task.id, None)

    def _stopped_before(self, task: Task, when: float) -> bool:
        """Whether the run was stopped before ``when`` (and the clock has seen it)."""
        ended = task.ended
        return ended is not None and ended[1] < when and ended[1] <= self.server.clock.now()

    def _error_status(self, task: Task) -> int:
        """HTTP status of the failure a ``task_fail:error:CODE`` fault injects."""
        return int((self._codes.get(task.data["error_code"]) or {}).get("status", 500))

    def _error_text(self, task: Task) -> str:
        if self._error_status(task) >= 500:
            return _STREAM_ERROR
        return str(self._codes[task.data["error_code"]].get("message", ""))

    # --- bodies ----------------------------------------------------------------------

    def _node_outputs(self, request: MockRequest, task: Task, node: Node, now: float) -> dict[str, Any]:
        data = task.data
        if node.type == "start":
            out: dict[str, Any] = dict(data["inputs"])
            out.update({
                "sys.files": [], "sys.user_id": data["user"],
                "sys.app_id": self._app_id(data["workflow"]),
                "sys.workflow_id": task.data["workflow"].id, "sys.workflow_run_id": task.id,
            })
        elif node.type == "end":
            out = self._run_outputs(request, task, now)
        else:
            out = {"text": "", "files": [], "json": []} if node.images else {}
            if node.id in data["files"]:
                out["files"] = [self._file_var(request, task, fid, now) for fid in data["files"][node.id]]
        out.update(node.outputs or {})
        return out

    def _run_outputs(self, request: MockRequest, task: Task, now: float) -> dict[str, Any]:
        by_id = {n.id: n for n in task.data["workflow"].nodes}
        out: dict[str, Any] = {}
        for item in task.data["workflow"].outputs:
            if "value_selector" in item:
                node_id, var = (str(s) for s in item["value_selector"])
                out[item["variable"]] = self._node_outputs(request, task, by_id[node_id], now).get(var)
            else:
                out[item["variable"]] = item["value"]
        return out

    def _summary(self, request: MockRequest, task: Task, now: float) -> dict[str, Any]:
        """The run as the blocking answer and workflow_finished show it at ``now``."""
        wf: Workflow = task.data["workflow"]
        status = _status(task, now)
        finished = task.finished_at(now)
        until = finished if finished is not None else now
        schedule = self._schedule(task)
        done = [n for n, _, f in schedule if f <= until]
        if status == "failed":
            done = done[:-1]  # the failed node reports no usage
        tokens = sum(n.tokens for n in done)
        began = [n for n, s, _ in schedule if s <= until]
        error = None
        if status == "failed":
            fail_node = wf.nodes[task.data["fail_at"]]
            if task.data["fail"] == "node":
                error = fail_node.error
            elif task.data["streaming"]:
                error = self._stream_error(task)[2]
            else:
                error = self._error_text(task)
        elif status == "stopped":
            error = "Stopped by user."  # [I] QueueStopEvent's reason for a manual stop
        steps = len(began)
        if status == "succeeded" and self.option("total_steps") == "seed" and wf.total_steps:
            steps = wf.total_steps
        return {
            "id": task.id,
            "workflow_id": wf.id,
            "status": status,
            "outputs": self._run_outputs(request, task, now) if status == "succeeded" else None,
            "error": error,
            "elapsed_time": until - task.created_at,
            "total_tokens": tokens,
            "total_steps": steps,
            "created_at": int(task.created_at),
            "finished_at": None if finished is None else int(finished),
        }

    def _node_event(
        self, request: MockRequest, task: Task, index: int, node: Node, previous: str | None,
        status: str,
    ) -> bytes:
        """node_started / node_finished, key for key as the release's stream entities write them
        ([V] task_entities.py NodeStartStreamResponse / NodeFinishStreamResponse)."""
        _, started, finished = self._schedule(task)[index]
        seed = self._seed_release
        data: dict[str, Any] = {
            "id": task.data["execution_ids"][index],
            "node_id": node.id,
            "node_type": node.type,
            "title": node.title,
            "index": index + 1,
            "predecessor_node_id": previous,
            "inputs": None,
        }
        if not seed:
            data["inputs_truncated"] = False
        if status == "started":
            data.update({"created_at": int(started), "extras": {}})
            if not seed:
                data.update({"iteration_id": None, "loop_id": None})
            return self._event(task, "node_started", data)
        now = self.server.clock.now()
        end = finished if status != "stopped" else min(now, finished)
        outputs = self._node_outputs(request, task, node, now) if status == "succeeded" else None
        data["inputs"] = dict(task.data["inputs"]) if node.type != "end" else outputs
        data["process_data"] = None
        if not seed:
            data["process_data_truncated"] = False
        data["outputs"] = outputs
        if not seed:
            data["outputs_truncated"] = False
        data.update({
            "status": status,
            "error": node.error if status == "failed" else (
                "Stopped by user." if status == "stopped" else None
            ),
            "elapsed_time": end - started,
            "execution_metadata": {"total_tokens": node.tokens, "total_price": 0, "currency": "USD"}
            if node.tokens and status == "succeeded" else None,
            "created_at": int(started),
            "finished_at": int(end),
            "files": [f for f in (outputs or {}).get("files") or [] if isinstance(f, dict)],
        })
        if not seed:
            data.update({"iteration_id": None, "loop_id": None})
        return self._event(task, "node_finished", data)

    def _finished_event(self, request: MockRequest, task: Task) -> bytes:
        """workflow_finished: [V] WorkflowFinishStreamResponse.Data of the release (the seed's
        has sequence_number and no exceptions_count)."""
        summary = self._summary(request, task, self.server.clock.now())
        files = [f for v in (summary["outputs"] or {}).values() if isinstance(v, list)
                 for f in v if isinstance(f, dict)]
        data: dict[str, Any] = {"id": summary["id"], "workflow_id": summary["workflow_id"]}
        if self._seed_release:
            data["sequence_number"] = task.data["sequence_number"]
        for key in ("status", "outputs", "error", "elapsed_time", "total_tokens", "total_steps"):
            data[key] = summary[key]
        data["created_by"] = {"id": end_user(task.data["user"]), "user": task.data["user"]}
        data["created_at"] = summary["created_at"]
        data["finished_at"] = summary["finished_at"]
        if not self._seed_release:
            data["exceptions_count"] = 0
        data["files"] = files
        return self._event(task, "workflow_finished", data)

    def _file_var(self, request: MockRequest, task: Task, file_id: str, now: float) -> dict[str, Any]:
        """A tool's output file as the release writes it: the seed's FileVar, or File.to_dict()."""
        spec = self._file_spec(task, file_id)
        ext = spec.extension if spec else ".png"
        mime = spec.content_type if spec else "image/png"
        path = f"/files/tools/{file_id}{ext}"
        if self._capture is not None:  # a kept answer's link: signed afresh on each answer
            url = f"{self._capture_token}{len(self._capture)}-"
            self._capture.append((path, file_id))
        else:
            signed_at, _ = self.server.link_times(task=task)  # the engine applies expired_url
            url = self._signed(request, path, file_id, signed_at)
        tenant = task.data["workflow"].tenant_id
        if not self._seed_release:
            # [V] core/file/models.py File.to_dict(): the model's fields in order, then url.
            # [I] a tool's file has no message file id, and the tool file's stored name is a
            # fresh hex name with the extension (ToolFileManager).
            return {
                "dify_model_identity": "__dify__file__",
                "id": None,
                "tenant_id": tenant,
                "type": "image",
                "transfer_method": "tool_file",
                "remote_url": None,
                "related_id": file_id,
                "filename": _tool_file_name(file_id) + ext,
                "extension": ext,
                "mime_type": mime,
                "size": len(render(spec)) if spec else -1,
                "url": url,
            }
        return {  # [V] the seed's FileVar, key for key
            "__variant": "FileVar",
            "tenant_id": tenant,
            "type": "image",
            "transfer_method": "tool_file",
            "url": url,
            "related_id": file_id,
            "filename": "image",
            "extension": ext,
            "mime_type": mime,
        }

    # --- signed links ----------------------------------------------------------------

    def _sign(self, file_id: str, timestamp: str, nonce: str) -> str:
        # [V] core/tools/signature.py: HMAC-SHA256, urlsafe base64 with its "=" padding
        return self.server.signer.urlsafe(f"file-preview|{file_id}|{timestamp}|{nonce}")

    def _signed(self, request: MockRequest, path: str, file_id: str, at: float) -> str:
        timestamp, nonce = str(int(at)), f"{self.server.rng.getrandbits(128):032x}"
        query = f"?timestamp={timestamp}&nonce={nonce}&sign={self._sign(file_id, timestamp, nonce)}"
        prefix = request.base_url if self.option("file_urls") == "absolute" else ""
        return prefix + path + query

    def _verify(self, request: MockRequest, file_id: str, now: float) -> MockResponse | None:
        """Dify's 403 unless the link is signed by us and younger than its lifetime."""
        q = request.query
        timestamp, nonce, sign = q.get("timestamp", ""), q.get("nonce", ""), q.get("sign", "")
        expected = self._sign(file_id, timestamp, nonce)
        timeout = self.link_lifetime() or math.inf
        # [V] Dify refuses a link older than FILES_ACCESS_TIMEOUT; the mock also refuses one
        # signed in its future (it never signs one), so no link outlives the timeout.
        # (str.isdigit() also takes "²": only ASCII digits, and few of them, are a timestamp.)
        fresh = _TIMESTAMP.fullmatch(timestamp) is not None and (
            -_CLOCK_SKEW <= now - int(timestamp) <= timeout)
        if not self.server.signer.matches(sign, expected) or not fresh:
            return self.error(request, 403, "forbidden", "Invalid request.")  # [V] a 403, [I] text
        return None

    @staticmethod
    def _app_id(workflow: Workflow) -> str:
        return _app_id(workflow.id)


@lru_cache(maxsize=256)
def _app_id(workflow_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dify-app:{workflow_id}"))


@lru_cache(maxsize=4096)
def _tool_file_name(file_id: str) -> str:
    """[I] the tool file's stored name: a hex name, the same for the same file."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"dify-tool-file:{file_id}").hex


def _image(node: Node, inputs: Mapping[str, Any], seed: int, index: int) -> ImageSpec:
    """The ``index``-th image a drawing node makes for a run: the same run, the same picture."""
    spec = node.images or {}
    return ImageSpec.of(
        int(spec.get("width", 512)), int(spec.get("height", 512)), fmt=str(spec.get("format", "png")),
        prompt=json.dumps(inputs, sort_keys=True, ensure_ascii=False), seed=seed, index=index,
    )


@lru_cache(maxsize=4096)
def end_user(user: str) -> str:
    """Dify keeps one end-user record per app and ``user`` string: a stable id for it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dify-end-user:{user}"))


def _status(task: Task, now: float) -> str:
    """The run's status at ``now``, from the same sums as its node schedule."""
    if task.ended is not None and now >= task.ended[1]:
        return task.ended[0]
    return task.final if now >= task.created_at + sum(task.durations) else "running"


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
