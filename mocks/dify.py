"""Dify Workflow API (Service API): run a workflow blocking or streaming, stop it, read it back.

Seed 004 (an image-generation workflow on a self-hosted Dify) and shared/reference/providers.md §5.
The workflow is data (``contracts/dify/workflow.yaml``, or your own file named by
``IMAGEGEN_DIFY_WORKFLOW``): its input form, its nodes with their timings and outputs.

A run is a :class:`~mocks.engine.Task` timeline, one phase per executed node; nothing runs in
the background. A blocking answer waits on the clock until the run ends (or the gateway cuts
it); a stream sleeps on the clock between its events and pings every 10 s. Output files are
served by the mock under Dify's own HMAC-signed ``/files/tools/{id}.png`` links.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import mimetypes
import os
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from imagegen_conformance.contracts import SchemaIssue

from .engine import (
    Body,
    Call,
    ImageSpec,
    MockRequest,
    MockResponse,
    Provider,
    Task,
    render,
    route,
    sse_event,
)

__all__ = ["WORKFLOW_ENV", "DifyProvider", "Node", "Workflow", "WorkflowError"]

#: Environment variable naming a workflow file to run instead of the default one.
WORKFLOW_ENV = "IMAGEGEN_DIFY_WORKFLOW"
TERMINAL = ("succeeded", "failed", "stopped", "partial-succeeded")
SSE_TYPE = "text/event-stream; charset=utf-8"  # [V] Flask appends the charset
PING = b"event: ping\n\n"  # [V] the bare keep-alive line, no data
_FORM_KINDS = ("text-input", "paragraph", "select", "number", "checkbox", "file", "file-list")
# [V] werkzeug's own description, sent when the body is not JSON.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # a signed link's Unix time, ASCII digits only
_CLOCK_SKEW = 60  # seconds a link's timestamp may lie ahead of the mock's clock
_BAD_JSON = "The browser (or proxy) sent a request that this server could not understand."
_STREAM_ERROR = "Internal Server Error, please contact support."  # [I] generic error event text


class WorkflowError(ValueError):
    """A workflow file that cannot be used; the message names the field and what is expected."""


@dataclass(frozen=True)
class Node:
    """One node of a workflow, in run order."""

    id: str
    type: str
    title: str
    seconds: tuple[float, float]  # provider seconds, drawn uniformly per run
    tokens: int = 0
    images: Mapping[str, Any] | None = None  # {count, width, height, format}: a drawing tool
    error: str = "Node execution failed."  # the node's error when a task_fail fault hits it
    outputs: Mapping[str, Any] | None = None  # literal outputs, merged into the node's own


@dataclass(frozen=True)
class Workflow:
    """A Dify workflow as data: ``Workflow.load()`` is the seed's image-generation app."""

    id: str
    tenant_id: str
    name: str
    total_steps: int | None
    user_input_form: tuple[Mapping[str, Any], ...]
    file_upload: Mapping[str, Any]
    nodes: tuple[Node, ...]
    outputs: tuple[Mapping[str, Any], ...]

    @classmethod
    def load(cls, source: str | os.PathLike[str] | None = None) -> Workflow:
        """Read a workflow file; None reads ``$IMAGEGEN_DIFY_WORKFLOW`` or the default."""
        source = source or os.environ.get(WORKFLOW_ENV) or None
        if source is None:
            builtin = resources.files("imagegen_conformance.contracts").joinpath("dify", "workflow.yaml")
            text = builtin.read_text("utf-8")
            where = "contracts/dify/workflow.yaml"
        else:
            path = Path(source)
            if not path.is_file():
                raise WorkflowError(f"workflow file {path} does not exist ({WORKFLOW_ENV})")
            text, where = path.read_text("utf-8"), str(path)
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise WorkflowError(f"workflow file {where} is not valid YAML: {exc}") from exc
        return cls.from_dict(raw, where=where)

    @classmethod
    def from_dict(cls, raw: Any, *, where: str = "workflow") -> Workflow:
        """Build and check a workflow from its mapping (the YAML file's content)."""
        if not isinstance(raw, Mapping):
            raise WorkflowError(f"{where}: expected a mapping with id, nodes, user_input_form")
        nodes_raw = raw.get("nodes")
        if not isinstance(nodes_raw, list) or not nodes_raw:
            raise WorkflowError(f"{where}: 'nodes' must be a non-empty list (start ... end)")
        nodes = []
        for i, item in enumerate(nodes_raw):
            if not isinstance(item, Mapping) or "id" not in item or "type" not in item:
                raise WorkflowError(f"{where}: nodes[{i}] needs at least 'id' and 'type'")
            try:
                secs = item.get("seconds", [0.01, 0.05])
                low, high = (secs, secs) if isinstance(secs, int | float) else tuple(secs)
                low, high = float(low), float(high)
                if not 0 <= low <= high:
                    raise ValueError("low > high")
                images = item.get("images")
                if images is not None:
                    ImageSpec.of(int(images.get("width", 512)), int(images.get("height", 512)),
                                 fmt=str(images.get("format", "png")))
                    int(images.get("count", 1))
                nodes.append(Node(
                    id=str(item["id"]), type=str(item["type"]),
                    title=str(item.get("title", item["type"])), seconds=(low, high),
                    tokens=int(item.get("tokens", 0)), images=images,
                    error=str(item.get("error", Node.error)), outputs=item.get("outputs"),
                ))
            except (TypeError, ValueError, AttributeError) as exc:
                raise WorkflowError(
                    f"{where}: nodes[{i}] is malformed ({exc}); seconds must be [low, high] with "
                    "0 <= low <= high, images {count, width, height, format: png|jpeg|webp}, "
                    "tokens an integer"
                ) from exc
        ids = [n.id for n in nodes]
        form = tuple(raw.get("user_input_form") or ())
        for i, entry in enumerate(form):
            spec = next(iter(entry.values())) if isinstance(entry, Mapping) and entry else None
            if (
                not isinstance(entry, Mapping) or len(entry) != 1 or next(iter(entry)) not in _FORM_KINDS
                or not isinstance(spec, Mapping) or "variable" not in spec
            ):
                raise WorkflowError(
                    f"{where}: user_input_form[{i}] must be {{KIND: {{variable: ..., ...}}}}, "
                    f"KIND one of {', '.join(_FORM_KINDS)}"
                )
        outputs = tuple(raw.get("outputs") or ())
        for i, out in enumerate(outputs):
            sel = out.get("value_selector") if isinstance(out, Mapping) else None
            if not isinstance(out, Mapping) or "variable" not in out or (
                sel is None and "value" not in out
            ):
                raise WorkflowError(f"{where}: outputs[{i}] needs 'variable' and 'value_selector' or 'value'")
            if sel is not None and (len(sel) != 2 or str(sel[0]) not in ids):
                raise WorkflowError(f"{where}: outputs[{i}].value_selector must be [node id, variable]")
        steps = raw.get("total_steps")
        return cls(
            id=str(raw.get("id") or uuid.uuid4()),
            tenant_id=str(raw.get("tenant_id") or uuid.uuid4()),
            name=str(raw.get("name", "workflow")),
            total_steps=None if steps is None else int(steps),
            user_input_form=form,
            file_upload=dict(raw.get("file_upload") or {}),
            nodes=tuple(nodes),
            outputs=outputs,
        )

    def validate_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The run's inputs with defaults filled in; ValueError in Dify's words when one is bad."""
        out = dict(inputs)
        for entry in self.user_input_form:
            kind, spec = next(iter(entry.items()))
            name = str(spec["variable"])
            value = inputs.get(name)
            if value is None or value == "":
                # [V] Dify's BaseAppGenerator._validate_inputs wording
                if spec.get("required"):
                    raise ValueError(f"{name} is required in input form")
                if spec.get("default") not in (None, ""):
                    out[name] = spec["default"]
                continue
            if kind in ("text-input", "paragraph"):
                if not isinstance(value, str):
                    raise ValueError(f"{name} in input form must be a string")
                limit = spec.get("max_length")
                if limit and len(value) > int(limit):
                    raise ValueError(f"{name} in input form must be less than {limit} characters")
            elif kind == "select":
                options = list(spec.get("options") or [])
                if value not in options:
                    raise ValueError(f"{name} in input form must be one of the following: {options}")
            elif kind == "number":
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise ValueError(f"{name} in input form must be a valid number")
                try:
                    float(value)
                except ValueError:
                    raise ValueError(f"{name} in input form must be a valid number") from None
        return out


class DifyProvider(Provider):
    """The Dify Service API of one workflow app: ``MockServer("dify")``."""

    id = "dify"
    image_prefix = None  # Dify serves its own signed /files/... routes

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.workflow = Workflow.load()
        limits = self.contract.behaviour.limits
        self._codes: dict[str, Any] = dict(self.contract.behaviour.raw.get("error_codes") or {})
        self._max_files = int(limits.get("max_files", 10_000))
        self._upload_budget = int(limits.get("upload_bytes_budget", 64 << 20))
        self._files: OrderedDict[str, ImageSpec] = OrderedDict()  # tool file id -> image
        self._uploads: OrderedDict[str, dict[str, Any]] = OrderedDict()  # upload id -> metadata
        self._upload_bytes: OrderedDict[str, bytes] = OrderedDict()
        self._runs_by_task: OrderedDict[str, str] = OrderedDict()  # task_id -> workflow_run_id
        # Futures of the blocking answers and streams now waiting on a run: stop wakes them.
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    def use_workflow(self, workflow: Workflow | str | os.PathLike[str] | Mapping[str, Any]) -> None:
        """Run another workflow from now on: a :class:`Workflow`, a file path, or a mapping."""
        if isinstance(workflow, Workflow):
            self.workflow = workflow
        elif isinstance(workflow, Mapping):
            self.workflow = Workflow.from_dict(workflow)
        else:
            self.workflow = Workflow.load(workflow)

    @property
    def live_streams(self) -> int:
        """How many blocking answers or streams are waiting on a run right now."""
        return sum(len(w) for w in self._waiters.values())

    # --- routes ----------------------------------------------------------------------

    @route("POST", "/v1/workflows/run", operation="runWorkflow")
    async def run(self, request: MockRequest, call: Call) -> MockResponse:
        body = call.body  # checked by the engine with refuse() below
        user = body["user"]
        try:
            inputs = self.workflow.validate_inputs(body["inputs"])
        except ValueError as exc:
            return self.error(request, 400, "invalid_param", str(exc))
        streaming = body.get("response_mode") == "streaming"
        task = self._new_run(call, inputs, user, streaming)
        if streaming:
            return MockResponse.stream(self._stream(request, task), SSE_TYPE)
        return await self._blocking(request, task)

    @route("POST", "/v1/workflows/tasks/{task_id}/stop", operation="stopWorkflowTask")
    async def stop(self, request: MockRequest, call: Call) -> MockResponse:
        # [V] always success, whoever asks and whatever the id; only streaming runs stop.
        run_id = self._runs_by_task.get(request.params["task_id"])
        task = call.tasks.get(run_id) if run_id else None
        stoppable = task is not None and (
            task.data["streaming"] or self.option("stop_blocking") == "true"
        )
        if task is not None and stoppable and task.end("stopped", call.now):
            for fut in self._waiters.get(task.id, ()):
                fut.get_loop().call_soon_threadsafe(_wake, fut)
        return MockResponse.json({"result": "success"})

    @route("GET", "/v1/workflows/run/{workflow_run_id}", operation="getWorkflowRun")
    async def run_detail(self, request: MockRequest, call: Call) -> MockResponse:
        task = call.tasks.get(request.params["workflow_run_id"])
        if task is None:
            return self.error(request, 404, "not_found", "Workflow run not found.")
        now = call.now
        summary = self._summary(request, task, now)
        return MockResponse.json({
            "id": task.id,
            "workflow_id": task.data["workflow"].id,
            "status": summary["status"],
            "inputs": json.dumps(task.data["inputs"]),  # [V] a JSON string, not an object
            "outputs": summary["outputs"] or {},
            "error": summary["error"],
            "total_steps": summary["total_steps"],
            "total_tokens": summary["total_tokens"],
            "created_at": summary["created_at"],
            "finished_at": summary["finished_at"],
            "elapsed_time": summary["elapsed_time"],
        })

    @route("GET", "/v1/parameters", operation="getParameters")
    async def parameters(self, request: MockRequest, call: Call) -> MockResponse:
        wf = self.workflow
        off = {"enabled": False}
        return MockResponse.json({
            "opening_statement": "",
            "suggested_questions": [],
            "suggested_questions_after_answer": off,
            "speech_to_text": off,
            "text_to_speech": {"enabled": False, "voice": "", "language": "", "autoPlay": "disabled"},
            "retriever_resource": off,
            "annotation_reply": off,
            "more_like_this": off,
            "sensitive_word_avoidance": off,
            "user_input_form": list(wf.user_input_form),
            "file_upload": dict(wf.file_upload),
            "system_parameters": {
                "file_size_limit": 15, "image_file_size_limit": 10, "audio_file_size_limit": 50,
                "video_file_size_limit": 100, "workflow_file_upload_limit": 10,
            },
        })

    @route("POST", "/v1/files/upload", operation="uploadFile")
    async def upload(self, request: MockRequest, call: Call) -> MockResponse:
        parts = call.parts  # read by the engine (aiohttp's multipart reader)
        files = [p for p in parts if p.name == "file"]
        if not files:
            return self.error(request, 400, "no_file_uploaded")
        if len(files) > 1:
            return self.error(request, 400, "too_many_files")
        filename, content_type, data = files[0].filename, files[0].content_type, files[0].data
        if not filename:
            return self.error(request, 400, "filename_not_exists_error")
        user = next((p.text() for p in parts if p.name == "user"), "")
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if not extension and content_type:  # no extension in the name: go by the part's type
            extension = (mimetypes.guess_extension(content_type) or "").lstrip(".")
        limits = self.contract.behaviour.limits
        kind = next(
            (k for k, exts in limits["upload_extensions"].items() if extension in exts), None
        )
        if kind is None:
            return self.error(request, 415, "unsupported_file_type")
        if len(data) > int(limits["upload_size_mb"][kind]) * 1024 * 1024:
            return self.error(request, 413, "file_too_large")
        file_id = str(uuid.UUID(int=call.rng.getrandbits(128), version=4))
        mime = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        meta = {
            "id": file_id,
            "name": filename,
            "size": len(data),
            "extension": extension,
            "mime_type": mime,
            "created_by": _end_user(user),
            "created_at": int(call.now),
            "preview_url": None,
            "source_url": self._signed(request, f"/files/{file_id}/file-preview", file_id, call.now),
            "original_url": None,
            "user_id": None,
            "tenant_id": self.workflow.tenant_id,
            "conversation_id": None,
            "file_key": f"upload_files/{self.workflow.tenant_id}/{file_id}.{extension}",
        }
        self._remember_upload(file_id, meta, data)
        return MockResponse.json(meta, 201)

    @route("GET", "/files/tools/{file_id}.{ext}", operation="getToolFile", auth=False)
    @route("HEAD", "/files/tools/{file_id}.{ext}", operation="getToolFile", auth=False)
    async def tool_file(self, request: MockRequest, call: Call) -> MockResponse:
        file_id = request.params["file_id"]
        denied = self._verify(request, file_id, call.now)
        if denied is not None:
            return denied
        spec = self._files.get(file_id)
        if spec is None or spec.extension != "." + request.params["ext"]:
            return self.error(request, 404, "not_found", "file is not found")
        body = b"" if request.method == "HEAD" else render(spec)
        return MockResponse.raw(body, 200, spec.content_type)

    @route("GET", "/files/{file_id}/file-preview", operation="getUploadFilePreview", auth=False)
    async def upload_preview(self, request: MockRequest, call: Call) -> MockResponse:
        file_id = request.params["file_id"]
        denied = self._verify(request, file_id, call.now)
        if denied is not None:
            return denied
        meta, data = self._uploads.get(file_id), self._upload_bytes.get(file_id)
        if meta is None or data is None:
            return self.error(request, 404, "not_found", "file is not found")
        headers = {}
        if request.query.get("as_attachment") == "true":
            headers["Content-Disposition"] = f'attachment; filename="{meta["name"]}"'
        return MockResponse.raw(data, 200, meta["mime_type"], headers)

    # --- the provider's own answers ------------------------------------------------------

    def error(
        self, request: MockRequest, status: int, code: str | int | None = None,
        message: str | None = None, headers: dict[str, str] | None = None,
    ) -> MockResponse:
        """``{"code", "message", "status"}`` [V]; a known code brings its own message."""
        spec = self.error_spec(status)
        if code is None:
            code = spec.code
        if message is None:
            known = self._codes.get(str(code))
            message = str(known["message"]) if known else spec.message
        return MockResponse.json({"code": code, "message": message, "status": status}, status, headers)

    def auth_error(self, request: MockRequest, reason: str) -> MockResponse:
        messages = {  # [V] wraps.py, except "invalid" [I]
            "missing": "Authorization header must be provided and start with 'Bearer'",
            "scheme": "Authorization scheme must be 'Bearer'",
            "invalid": "Access token is invalid",
        }
        return self.error(request, 401, "unauthorized", messages[reason])

    def not_found(self, request: MockRequest) -> MockResponse:
        return self.error(request, 404, "not_found", self.error_spec(404).message)

    def method_not_allowed(self, request: MockRequest, allowed: list[str]) -> MockResponse:
        """[I] werkzeug routes before the view authenticates: a known path asked with another
        method is MethodNotAllowed (405, with Allow), in Dify's {code, message, status} envelope."""
        methods = set(allowed) | {"OPTIONS"}  # Flask answers OPTIONS itself
        if "GET" in methods:
            methods.add("HEAD")
        return self.error(request, 405, "method_not_allowed", self.error_spec(405).message,
                          {"Allow": ", ".join(sorted(methods))})

    def request_timeout(self, request: MockRequest) -> MockResponse:
        # [I] werkzeug's RequestTimeout, snake-cased as Dify's handler does
        return self.error(request, 408, "request_timeout",
                          "The server closed the network connection because the browser didn't "
                          "finish the request within the specified time.")

    def too_large(self, request: MockRequest, limit: int) -> MockResponse:
        if request.path.endswith("/files/upload"):
            return self.error(request, 413, "file_too_large")
        # [V] werkzeug RequestEntityTooLarge, snake-cased as Dify's handler does
        return self.error(
            request, 413, "request_entity_too_large",
            "The data value transmitted exceeds the capacity limit.",
        )

    def overloaded(self, request: MockRequest) -> MockResponse:
        return self.error(request, 503)

    def link_lifetime(self) -> float | None:
        """[V] FILES_ACCESS_TIMEOUT: signed file links are valid this long (option, default 300 s)."""
        return float(self.option("files_access_timeout"))

    def describe_task(self, task: Any) -> dict[str, Any]:
        data = task.data
        return {
            "task_id": data["task_id"], "user": data["user"], "streaming": data["streaming"],
            "nodes": len(task.durations), "fail": data["fail"],
        }

    def on_reset(self) -> None:
        self._files.clear()
        self._uploads.clear()
        self._upload_bytes.clear()
        self._runs_by_task.clear()

    # --- runs ------------------------------------------------------------------------

    def refuse(self, request: MockRequest, body: Body) -> MockResponse | None:
        """Dify's refusals, in its order: the body, then ``user``, then the run's fields."""
        if body.operation == "uploadFile":
            # [V] werkzeug parses a broken multipart body silently: no file was uploaded.
            return None if body.error is None else self.error(request, 400, "no_file_uploaded")
        if body.error is not None:
            return self.error(request, 400, "bad_request", _BAD_JSON)
        assert body.data is not None
        user = body.data.get("user")
        if not isinstance(user, str) or not user:
            return self.error(request, 400, "invalid_param", "Arg user must be provided.")  # [V]
        if body.operation == "runWorkflow":
            problem = self._check_run_body(body.data, body.issues)
            if problem is not None:
                return self.error(request, 400, "invalid_param", problem)
        return None

    def _check_run_body(self, body: Mapping[str, Any], issues: list[SchemaIssue]) -> str | None:
        """The first problem of a run request after ``user``, in words a client can act on."""
        if not isinstance(body.get("inputs"), dict):
            return "inputs is required and must be an object"
        mode = body.get("response_mode")
        if mode is not None and mode not in ("blocking", "streaming"):
            return f"response_mode must be 'blocking' or 'streaming', got {mode!r}"
        # inputs are checked against the running workflow's own form, in Dify's words, later.
        issues = [i for i in issues if not i.path.startswith("$.inputs")]
        if issues:
            return f"{issues[0].path.removeprefix('$.')}: {issues[0].message}"
        for item in body.get("files") or []:
            if item["transfer_method"] == "local_file" and item.get("upload_file_id") not in self._uploads:
                return "Invalid upload file"  # [I] Dify's file factory wording
        return None

    def _new_run(self, call: Call, inputs: dict[str, Any], user: str, streaming: bool) -> Task:
        rng, nodes = call.rng, self.workflow.nodes
        durations = [rng.uniform(*n.seconds) for n in nodes]
        # The faults act on the first working node: it fails, or it never finishes.
        work = next((i for i, n in enumerate(nodes) if n.type not in ("start", "end")), len(nodes) - 1)
        run_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        data: dict[str, Any] = {
            "task_id": task_id,
            "user": user,
            "inputs": inputs,
            "streaming": streaming,
            "seed": rng.getrandbits(31),
            "execution_ids": [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in nodes],
            "files": {},
            "workflow": self.workflow,  # the run keeps its workflow if another is loaded later
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
        while len(self._runs_by_task) > int(self.contract.behaviour.limits.get("max_tasks", 100_000)):
            self._runs_by_task.popitem(last=False)
        return task

    def _draw(self, node: Node, inputs: Mapping[str, Any], seed: int, rng: Any) -> list[str]:
        spec = node.images or {}
        prompt = json.dumps(inputs, sort_keys=True, ensure_ascii=False)
        ids = []
        for index in range(int(spec.get("count", 1))):
            file_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            self._files[file_id] = ImageSpec.of(
                int(spec.get("width", 512)), int(spec.get("height", 512)),
                fmt=str(spec.get("format", "png")), prompt=prompt, seed=seed, index=index,
            )
            ids.append(file_id)
        while len(self._files) > self._max_files:
            self._files.popitem(last=False)
        return ids

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
        cut = math.inf if limit == "off" else task.created_at + float(limit)
        end = task.created_at + sum(task.durations)
        while _status(task, clock.now()) == "running":
            if clock.now() >= cut:
                # [V] seed: Cloudflare gives up after 100 s; its answer is 524 [I] body.
                return MockResponse.raw(b"error code: 524", 524, "text/plain; charset=UTF-8")
            await self._wait_until(task, min(end, cut))
        summary = self._summary(request, task, clock.now())
        if task.data["fail"] == "error" and summary["status"] == "failed":
            return self.error(
                request, self._error_status(task), task.data["error_code"], self._error_text(task)
            )
        keys = ("id", "workflow_id", "status", "outputs", "error", "elapsed_time", "total_tokens",
                "total_steps", "created_at", "finished_at")
        return MockResponse.json({
            "task_id": task.data["task_id"],
            "workflow_run_id": task.id,
            "data": {k: summary[k] for k in keys},
        })

    async def _stream(self, request: MockRequest, task: Task) -> AsyncIterator[bytes]:
        """The run's events as the clock reaches them, with a ping every 10 s of quiet or not."""
        clock = self.server.clock
        interval = float(self.contract.behaviour.limits.get("ping_interval", 10))
        next_ping = clock.now() + interval
        top = {"task_id": task.data["task_id"], "workflow_run_id": task.id}

        def stopped_before(when: float) -> bool:
            ended = task.ended
            return ended is not None and ended[1] < when and ended[1] <= clock.now()

        yield sse_event({"event": "workflow_started", **top, "data": {
            "id": task.id, "workflow_id": task.data["workflow"].id, "inputs": task.data["inputs"],
            "created_at": int(task.created_at), "reason": "initial",
        }})
        previous: str | None = None
        for index, (node, started, finished) in enumerate(self._schedule(task)):
            for when, phase in ((started, "start"), (finished, "finish")):
                while True:  # wait for ``when``, pinging on the way, unless stop comes first
                    now = clock.now()
                    if stopped_before(when):
                        break
                    if next_ping < when and next_ping <= now:
                        yield PING
                        while next_ping <= now:
                            next_ping += interval
                        continue
                    if now >= when:
                        break
                    await self._wait_until(task, min(when, next_ping))
                if stopped_before(when):
                    if phase == "finish":
                        yield self._node_event(request, task, index, node, previous, "stopped")
                    yield self._finished_event(request, task, top)
                    return
                if phase == "finish" and task.data["fail"] == "error" and index == task.data["fail_at"]:
                    code = task.data["error_code"]
                    yield sse_event({"event": "error", "task_id": task.data["task_id"],
                                     "message": self._error_text(task), "code": code,
                                     "status": self._error_status(task)})
                    return
                status = "started" if phase == "start" else (
                    "failed" if index == task.data["fail_at"] else "succeeded"
                )
                yield self._node_event(request, task, index, node, previous, status)
            previous = node.id
        yield self._finished_event(request, task, top)

    async def _wait_until(self, task: Task, when: float) -> None:
        """Sleep on the clock until ``when`` (provider time), or until the run is stopped."""
        clock = self.server.clock
        delay = min(when - clock.now(), 1e9)
        if delay <= 0:
            return
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(task.id, set())
        waiters.add(stop)
        sleeper = asyncio.ensure_future(clock.sleep(delay))
        sleeper.set_name(f"imagegen_conformance.mocks.dify:wait:{task.id}")
        try:
            await asyncio.wait({sleeper, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stop.cancel()
            waiters.discard(stop)
            if not waiters:
                self._waiters.pop(task.id, None)

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
            error = fail_node.error if task.data["fail"] == "node" else self._error_text(task)
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
        _, started, finished = self._schedule(task)[index]
        data: dict[str, Any] = {
            "id": task.data["execution_ids"][index],
            "node_id": node.id,
            "node_type": node.type,
            "title": node.title,
            "index": index + 1,
            "predecessor_node_id": previous,
            "inputs": None,
            "inputs_truncated": False,
            "created_at": int(started),
            "extras": {},
            "iteration_id": None,
            "loop_id": None,
        }
        event = "node_started"
        if status != "started":
            event = "node_finished"
            now = self.server.clock.now()
            end = finished if status != "stopped" else min(now, finished)
            outputs = self._node_outputs(request, task, node, now) if status == "succeeded" else None
            inputs = dict(task.data["inputs"]) if node.type != "end" else outputs
            files = [f for f in (outputs or {}).get("files") or [] if isinstance(f, dict)]
            data.update({
                "inputs": inputs,
                "process_data": None,
                "process_data_truncated": False,
                "outputs": outputs,
                "outputs_truncated": False,
                "status": status,
                "error": node.error if status == "failed" else (
                    "Stopped by user." if status == "stopped" else None
                ),
                "elapsed_time": end - started,
                "execution_metadata": {"total_tokens": node.tokens, "total_price": 0, "currency": "USD"}
                if node.tokens and status == "succeeded" else None,
                "finished_at": int(end),
                "files": files,
            })
        return sse_event({"event": event, "task_id": task.data["task_id"],
                          "workflow_run_id": task.id, "data": data})

    def _finished_event(self, request: MockRequest, task: Task, top: Mapping[str, str]) -> bytes:
        summary = self._summary(request, task, self.server.clock.now())
        files = [f for v in (summary["outputs"] or {}).values() if isinstance(v, list)
                 for f in v if isinstance(f, dict)]
        return sse_event({"event": "workflow_finished", **top, "data": {
            **summary,
            "created_by": {"id": _end_user(task.data["user"]), "user": task.data["user"]},
            "exceptions_count": 0,
            "files": files,
        }})

    def _file_var(self, request: MockRequest, task: Task, file_id: str, now: float) -> dict[str, Any]:
        spec = self._files.get(file_id)
        ext = spec.extension if spec else ".png"
        signed_at, _ = self.server.link_times(task=task)  # the engine applies expired_url
        return {  # [V] the seed's FileVar, key for key
            "__variant": "FileVar",
            "tenant_id": task.data["workflow"].tenant_id,
            "type": "image",
            "transfer_method": "tool_file",
            "url": self._signed(request, f"/files/tools/{file_id}{ext}", file_id, signed_at),
            "related_id": file_id,
            "filename": "image",
            "extension": ext,
            "mime_type": spec.content_type if spec else "image/png",
        }

    # --- signed links ----------------------------------------------------------------

    def _sign(self, file_id: str, timestamp: str, nonce: str) -> str:
        # [V] core/tools/signature.py: HMAC-SHA256, urlsafe base64 with its "=" padding
        message = f"file-preview|{file_id}|{timestamp}|{nonce}".encode()
        digest = hmac.new(self.server.secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()

    def _signed(self, request: MockRequest, path: str, file_id: str, at: float) -> str:
        timestamp, nonce = str(int(at)), f"{self.server.rng.getrandbits(128):032x}"
        query = f"?timestamp={timestamp}&nonce={nonce}&sign={self._sign(file_id, timestamp, nonce)}"
        prefix = request.base_url if self.option("file_urls") == "absolute" else ""
        return prefix + path + query

    def _verify(self, request: MockRequest, file_id: str, now: float) -> MockResponse | None:
        q = request.query
        timestamp, nonce, sign = q.get("timestamp", ""), q.get("nonce", ""), q.get("sign", "")
        expected = self._sign(file_id, timestamp, nonce)
        timeout = self.link_lifetime() or math.inf
        good = bool(sign) and hmac.compare_digest(sign.encode("utf-8", "surrogatepass"),
                                                  expected.encode())
        # [V] Dify refuses a link older than FILES_ACCESS_TIMEOUT; the mock also refuses one
        # signed in its future (it never signs one), so no link outlives the timeout.
        # (str.isdigit() also takes "²": only ASCII digits, and few of them, are a timestamp.)
        fresh = _TIMESTAMP.fullmatch(timestamp) is not None and (
            -_CLOCK_SKEW <= now - int(timestamp) <= timeout)
        if not good or not fresh:
            return self.error(request, 403, "forbidden", "Invalid request.")  # [V] a 403, [I] text
        return None

    # --- helpers ---------------------------------------------------------------------

    def _remember_upload(self, file_id: str, meta: dict[str, Any], data: bytes) -> None:
        self._uploads[file_id] = meta
        self._upload_bytes[file_id] = data
        while len(self._uploads) > self._max_files:
            old, _ = self._uploads.popitem(last=False)
            self._upload_bytes.pop(old, None)
        while sum(len(b) for b in self._upload_bytes.values()) > self._upload_budget:
            self._upload_bytes.popitem(last=False)

    @staticmethod
    def _app_id(workflow: Workflow) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dify-app:{workflow.id}"))


def _end_user(user: str) -> str:
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

