"""Dify Workflow API (Service API): the routes, Dify's envelope and refusals, and uploads.

Seed 004 (an image-generation workflow on a self-hosted Dify) and shared/reference/providers.md §5.
How a run behaves over time is in ``_runs.py``; the workflow it runs in ``_workflow.py``.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Iterable, Mapping
from typing import Any

from imagegen_conformance.contracts import SchemaIssue

from ..engine import Body, Call, MockRequest, MockResponse, Route, loads, render, route, uuid4_text
from ._runs import SSE_TYPE, DifyRuns, _status, dify_json, end_user

__all__ = ["DifyProvider"]

# [V] werkzeug's own description, sent when the body is not JSON.
_BAD_JSON = "The browser (or proxy) sent a request that this server could not understand."
# The upload answer's fields in the seed's release (later ones add source_url etc.).
_SEED_UPLOAD_FIELDS = ("id", "name", "size", "extension", "mime_type", "created_by", "created_at")
# [V] flask-restful reqparse: a required argument of location="json" that is not there.
_MISSING = "Missing required parameter in the JSON body"
_KEPT_DETAILS = 4096  # finished runs whose detail answer is kept


def restful(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> MockResponse:
    """A flask-restful resource's answer (and its error handler's): [V] output_json writes
    ``json.dumps(data) + "\\n"`` as application/json."""
    return MockResponse(status, {"Content-Type": "application/json", **(headers or {})},
                        dify_json(data) + b"\n")


class DifyProvider(DifyRuns):
    """The Dify Service API of one workflow app: ``MockServer("dify")``."""

    id = "dify"
    image_prefix = None  # Dify serves its own signed /files/... routes

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        limits = self.contract.behaviour.limits
        self._upload_budget = int(limits.get("upload_bytes_budget", 64 << 20))
        self._uploads = server.shelf("uploads", limit=self._max_files)  # upload id -> metadata
        self._upload_bytes = server.shelf("upload_bytes", limit=self._max_files,
                                          budget=self._upload_budget)

    # --- routes ----------------------------------------------------------------------

    @route("POST", "/v1/workflows/run", operation="runWorkflow")
    async def run(self, request: MockRequest, call: Call) -> MockResponse:
        body = call.body  # checked by the engine with refuse() below
        user = body["user"]
        try:
            # reqparse's type=dict has made an object of it (refuse() checked that it can)
            inputs = self.workflow.validate_inputs(_inputs(body["inputs"]))
        except ValueError as exc:
            return self.error(request, 400, "invalid_param", str(exc))
        streaming = body.get("response_mode") == "streaming"
        await self._sequence.reserve()  # its run number, from the shared store when there is one
        task = self._new_run(call, inputs, user, streaming)
        if streaming:
            return MockResponse.stream(self._stream(request, task), SSE_TYPE)
        await call.flush()  # with a shared store, other workers find the run while it waits
        return await self._blocking(request, task)

    @route("POST", "/v1/workflows/tasks/{task_id}/stop", operation="stopWorkflowTask")
    async def stop(self, request: MockRequest, call: Call) -> MockResponse:
        # [V] always success, whoever asks and whatever the id; only streaming runs stop.
        run_id = self._runs_by_task.get(request.params["task_id"])
        task = call.tasks.get(run_id) if run_id else None
        stoppable = task is not None and (
            task.data["streaming"] or self.option("stop_blocking") == "true"
        )
        if task is not None and self._seed_release and call.body["user"] != task.data["user"]:
            # [V] the seed's release: AppQueueManager.set_stop_flag ignores a stop from another
            # end user; later ones stop regardless (set_stop_flag_no_user_check).
            stoppable = False
        if task is not None and stoppable:
            self._stop_run(task, call.now)
        return restful({"result": "success"})

    @route("GET", "/v1/workflows/run/{workflow_run_id}", operation="getWorkflowRun")
    async def run_detail(self, request: MockRequest, call: Call) -> MockResponse:
        task = call.tasks.get(request.params["workflow_run_id"])
        if task is None:
            return self.error(request, 404, "not_found", "Workflow run not found.")
        return self._detail(request, task, call.now)

    def _detail(self, request: MockRequest, task: Any, now: float) -> MockResponse:
        """The run detail. A finished run's answer is made once (per status, workflow and the
        options it shows) and kept as its bytes around its file links; each answer signs the
        links afresh, drawing the nonces in the order a fresh answer draws them."""
        status = _status(task, now)
        if status == "running":
            return restful(self._detail_body(request, task, now))
        key = (task.created_at, status, task.ended, task.durations, id(task.data["workflow"]),
               self.option("release"), self.option("total_steps"))
        kept = self._details.get(task.id)
        if kept is None or kept[0] != key:
            self._capture = []
            try:
                body = dify_json(self._detail_body(request, task, now)) + b"\n"
                links = self._capture
            finally:
                self._capture = None
            parts = re.split(re.escape(self._capture_token.encode()) + rb"([0-9]+)-", body)
            kept = (key, parts, links)
            if len(self._details) >= _KEPT_DETAILS:
                self._details.pop(next(iter(self._details)))
            self._details[task.id] = kept
        _, parts, links = kept
        if not links:
            return MockResponse(200, {"Content-Type": "application/json"}, parts[0])
        urls = []
        for path, file_id in links:  # every link the answer signs, in order (some not shown)
            signed_at, _ = self.server.link_times(task=task)  # the engine applies expired_url
            urls.append(json.dumps(self._signed(request, path, file_id, signed_at))[1:-1].encode())
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            out += (urls[int(parts[i])], parts[i + 1])
        return MockResponse(200, {"Content-Type": "application/json"}, b"".join(out))

    def _detail_body(self, request: MockRequest, task: Any, now: float) -> dict[str, Any]:
        summary = self._summary(request, task, now)
        return {
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
        }

    @route("GET", "/v1/parameters", operation="getParameters")
    async def parameters(self, request: MockRequest, call: Call) -> MockResponse:
        wf = self.workflow
        off = {"enabled": False}
        body: dict[str, Any] = {
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
        }
        if self._seed_release:
            # [V] the seed-era AppParameterApi marshals in this order, and its system_parameters
            # is image_file_size_limit alone, a fields.String of UPLOAD_IMAGE_FILE_SIZE_LIMIT.
            order = ("opening_statement", "suggested_questions", "suggested_questions_after_answer",
                     "speech_to_text", "text_to_speech", "retriever_resource", "annotation_reply",
                     "more_like_this", "user_input_form", "sensitive_word_avoidance", "file_upload")
            body = {k: body[k] for k in order}
            body["system_parameters"] = {"image_file_size_limit": "10"}
        return restful(body)

    @route("GET", "/v1/info", operation="getAppInfo")
    async def info(self, request: MockRequest, call: Call) -> MockResponse:
        """[V] service_api/app/app.py AppInfoApi, from the workflow file: name and description;
        later releases add tags, mode and author_name."""
        wf = self.workflow
        body: dict[str, Any] = {"name": wf.name, "description": wf.description}
        if not self._seed_release:
            body.update({"tags": list(wf.tags), "mode": "workflow", "author_name": wf.author_name})
        return restful(body)

    @route("GET", "/v1/meta", operation="getAppMeta")
    async def meta(self, request: MockRequest, call: Call) -> MockResponse:
        """[V] AppMetaApi (AppService.get_app_meta): each tool node's icon by its tool_name; a
        built-in provider's is CONSOLE_API_URL (empty when self-hosted: a relative link) +
        /console/api/workspaces/current/tool-provider/builtin/{provider_id}/icon."""
        icons: dict[str, Any] = {}
        for node in self.workflow.nodes:
            tool = node.tool or {}
            if node.type != "tool" or not tool.get("tool_name"):
                continue
            if tool.get("provider_type") == "builtin":
                icons[str(tool["tool_name"])] = (
                    f"/console/api/workspaces/current/tool-provider/builtin/{tool['provider_id']}/icon"
                )
            elif tool.get("provider_type") == "api":  # [V] the provider's icon, else this default
                icons[str(tool["tool_name"])] = tool.get("icon") or {
                    "background": "#252525", "content": "\U0001f601"}
        return restful({"tool_icons": icons})

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
        file_id = uuid4_text(call.rng.getrandbits(128))
        mime = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        meta = {
            "id": file_id,
            "name": filename,
            "size": len(data),
            "extension": extension,
            "mime_type": mime,
            "created_by": end_user(user),
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
        if self._seed_release:  # [V] the seed-era fields/file_fields.py marshals these seven
            return restful({k: meta[k] for k in _SEED_UPLOAD_FIELDS}, 201)
        return restful(meta, 201)

    @route("GET", "/files/tools/{file_id}.{ext}", operation="getToolFile", auth=False)
    async def tool_file(self, request: MockRequest, call: Call) -> MockResponse:
        denied = self._verify(request, request.params["file_id"], call.now)  # a 403 comes first
        spec = self._files.get(request.params["file_id"])
        if denied is not None or spec is None or spec.extension != "." + request.params["ext"]:
            return denied or self.error(request, 404, "not_found", "file is not found")
        return MockResponse.raw(render(spec), 200, spec.content_type)  # HEAD: the engine drops it

    @route("GET", "/files/{file_id}/file-preview", operation="getUploadFilePreview", auth=False)
    async def upload_preview(self, request: MockRequest, call: Call) -> MockResponse:
        file_id = request.params["file_id"]
        meta, data = self._uploads.get(file_id), self._upload_bytes.get(file_id)
        denied = self._verify(request, file_id, call.now)
        if denied is not None or meta is None or data is None:
            return denied or self.error(request, 404, "not_found", "file is not found")
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
        return restful({"code": code, "message": message, "status": status}, status, headers)

    def param_error(self, request: MockRequest, param: str, message: str) -> MockResponse:
        """[V] libs/external_api.py: a reqparse refusal ``{argument: reason}`` becomes
        ``{"code": "invalid_param", "message": reason, "params": argument}``; later releases
        add ``"status": 400``."""
        body: dict[str, Any] = {"code": "invalid_param", "message": message, "params": param}
        if not self._seed_release:
            body["status"] = 400
        return restful(body, 400)

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
        return self.error(request, 405, "method_not_allowed", self.error_spec(405).message,
                          {"Allow": _allow(allowed)})

    def options(self, request: MockRequest, allowed: list[str]) -> MockResponse:
        """[V] Flask answers OPTIONS itself (provide_automatic_options): 200, the path's methods
        in Allow, an empty body, before any view or authentication runs."""
        return MockResponse.raw(b"", 200, "text/html; charset=utf-8", {"Allow": _allow(allowed)})

    def too_large(self, request: MockRequest, limit: int) -> MockResponse:
        if request.path.endswith("/files/upload"):
            return self.error(request, 413, "file_too_large")
        # [V] werkzeug RequestEntityTooLarge, snake-cased as Dify's handler does
        return self.error(
            request, 413, "request_entity_too_large",
            "The data value transmitted exceeds the capacity limit.",
        )

    def request_timeout(self, request: MockRequest) -> MockResponse:
        # [I] werkzeug's RequestTimeout, snake-cased as Dify's handler does
        return self.error(request, 408, "request_timeout",
                          "The server closed the network connection because the browser didn't "
                          "finish the request within the specified time.")

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
        self._forget_runs()
        self._uploads.clear()
        self._upload_bytes.clear()

    # --- bodies (parsed and checked by the engine) --------------------------------------

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
            refused = _reqparse(body.data)
            if refused is not None:
                return self.param_error(request, *refused)
            problem = self._check_run_body(body.data, body.issues)
            if problem is not None:
                return self.error(request, 400, "invalid_param", problem)
        return None

    def _check_run_body(self, body: Mapping[str, Any], issues: list[SchemaIssue]) -> str | None:
        """The first problem of a run request after ``user`` and reqparse, in words a client
        can act on ([I] the mock's wording for what Dify's file factory refuses)."""
        # inputs are checked against the running workflow's own form, in Dify's words, later.
        issues = [i for i in issues if not i.path.startswith("$.inputs")]
        if issues:
            return f"{issues[0].path.removeprefix('$.')}: {issues[0].message}"
        for item in body.get("files") or []:
            if item["transfer_method"] == "local_file" and item.get("upload_file_id") not in self._uploads:
                return "Invalid upload file"  # [I] Dify's file factory wording
        return None

    def _remember_upload(self, file_id: str, meta: dict[str, Any], data: bytes) -> None:
        self._uploads[file_id] = meta  # each shelf drops its oldest beyond its bound
        self._upload_bytes[file_id] = data

    # --- a shared store (serve --workers): what a request needs from the other workers ----

    def shelf_keys(self, request: MockRequest, route: Route) -> Iterable[tuple[str, str]]:
        params, operation = request.params, route.operation
        if operation == "stopWorkflowTask":
            return [("runs", params["task_id"])]
        if operation == "getToolFile":
            return [("files", params["file_id"])]
        if operation == "getUploadFilePreview":
            return [("uploads", params["file_id"]), ("upload_bytes", params["file_id"])]
        if operation == "runWorkflow" and b"upload_file_id" in request.body:
            try:
                files = loads(request.body).get("files") or []  # strict, depth-bounded
                return [("uploads", str(f["upload_file_id"])) for f in files
                        if isinstance(f, dict) and "upload_file_id" in f]
            except (ValueError, AttributeError, TypeError):
                return ()  # the engine answers the bad body
        return ()

    def task_ids(self, request: MockRequest, route: Route) -> Iterable[str] | None:
        if route.operation == "stopWorkflowTask":  # a stop names the task id, not the run
            run_id = self._runs_by_task.get(request.params["task_id"])
            return [run_id] if run_id else []
        if route.operation in ("getToolFile", "getUploadFilePreview"):
            return []  # files, not runs
        return super().task_ids(request, route)


def _inputs(value: Any) -> dict[str, Any]:
    """``inputs`` as reqparse's ``type=dict`` makes it (an object, or a list of pairs), with each
    key as Dify's ``json.dumps`` then writes it: ``[[1, "x"]]`` is ``{"1": "x"}``, null ``"null"``."""
    return {k if isinstance(k, str) else json.dumps(k): v for k, v in dict(value).items()}


def _reqparse(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(argument, message) of the first argument the run's reqparse refuses, or None.

    [V] workflow.py: inputs type=dict required nullable=False, files type=list, response_mode
    type=str choices blocking|streaming, all location="json", in that order; [V] flask-restful's
    messages: the missing one, "Must not be null!", the type's own error (the mock calls the
    same type), "<value> is not a valid choice".
    """
    if "inputs" not in body:
        return "inputs", _MISSING
    if body["inputs"] is None:
        return "inputs", "Must not be null!"
    try:
        dict(body["inputs"])
    except (TypeError, ValueError) as exc:
        return "inputs", str(exc)
    if body.get("files") is not None:
        try:
            list(body["files"])
        except TypeError as exc:
            return "files", str(exc)
    if "response_mode" in body:
        mode = body["response_mode"]
        value = None if mode is None else str(mode)  # a null passes type=str as None
        if value not in ("blocking", "streaming"):
            return "response_mode", f"{value} is not a valid choice"
    return None


def _allow(methods: list[str]) -> str:
    """werkzeug's Allow: the rule's methods, HEAD with GET, and OPTIONS (Flask answers it)."""
    allowed = set(methods) | {"OPTIONS"}
    if "GET" in allowed:
        allowed.add("HEAD")
    return ", ".join(sorted(allowed))
