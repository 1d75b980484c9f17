"""Cloudsway MaaS-Flux-1-schnell: create an image task, then poll it.

Seed 000 (docs.cloudsway.net, Chinese page) and shared/reference/providers.md §1. The routes
match any ``.../{endpointPath}/images/...`` so that a path under another prefix is answered in
Cloudsway's own envelope: the prefixes the documents use (the curl examples' ``/v2/ai`` and the
template's doubled ``/v2/ai/v2/ai``, contract ``paths.prefixes``) reach the endpoint, any other
is a 400 ``NO_ENDPOINT`` (quirk basepath-doubles-v2-ai); option ``prefixes=any`` takes them all.
"""

from __future__ import annotations

from typing import Any

from .engine import Body, Call, ImageSpec, MockRequest, MockResponse, Provider, Task, compact, route

# Title-case reason per status for the openai-style envelope's "type" field.
_OPENAI_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
    429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 504: "timeout_error",
}
_FIELD_RULES = {
    "prompts": "prompts is required and must be a non-empty string",
    "batchsize": "batchsize must be an integer between 1 and 8",
    "aspect_ratio": "aspect_ratio must be one of 1:1, 2:3, 3:2, 3:4, 4:3, 16:9, 9:16",
    "step": "step must be an integer between 4 and 10",
    "seed": "seed must be an integer",
}


class CloudswayProvider(Provider):
    id = "cloudsway"

    # --- routes ----------------------------------------------------------------------

    @route("POST", "{prefix:(?:/[^/]+)*?}/{endpoint}/images/generations", operation="createImageTask")
    async def create(self, request: MockRequest, call: Call) -> MockResponse:
        body = call.body  # parsed and checked by the engine (normalise, refuse below)
        width, height = self._size(body.get("aspect_ratio", "1:1"))
        task = call.new_task(compact({  # a million tasks: the keys once, not a million times
            "prompts": body["prompts"],
            "batchsize": int(body.get("batchsize", 1)),
            "aspect_ratio": body.get("aspect_ratio", "1:1"),
            "width": width,
            "height": height,
            "step": body.get("step", 4),
            "seed": int(body.get("seed", 0)),
        }))
        return MockResponse.json({"status": "success", "taskId": task.id})

    @route("GET", "{prefix:(?:/[^/]+)*?}/{endpoint}/images/tasks/{task_id}", operation="getImageTask")
    async def query(self, request: MockRequest, call: Call) -> MockResponse:
        refused = self._no_endpoint(request)
        if refused is not None:
            return refused
        task_id = request.params["task_id"].strip()
        task = call.tasks.get(task_id)
        # Tasks are not bound to their endpointPath: the seed queries with lXynAhfbOiD a task
        # it created with lXynAhfbAiD (quirk query-example-endpoint-differs).
        if task is None:
            return self.error(request, 404, "NOT_FOUND", f"task {task_id} does not exist")
        state = task.poll(call.now)
        if state in task.terminal and self.contract.behaviour.retention.image_url is None:
            return call.answer_once(task, lambda: self._status(call, task, state))
        return self._status(call, task, state)

    def _status(self, call: Call, task: Task, state: str) -> MockResponse:
        body: dict[str, Any] = {"status": state, "completed": state == "completed", "imageUrls": []}
        if state == "completed":
            body["imageUrls"] = [
                call.image_url(self._spec(task.data, i), task=task) for i in range(task.data["batchsize"])
            ]
        elif state == "failed":
            body["message"] = "Image generation failed."
        return MockResponse.json(body)

    # --- the provider's own answers ------------------------------------------------------

    def error(
        self, request: MockRequest, status: int, code: str | int | None = None,
        message: str | None = None, headers: dict[str, str] | None = None,
    ) -> MockResponse:
        spec = self.error_spec(status)
        code = code if code is not None else spec.code
        message = message or spec.message
        if self.option("error_shape") == "openai":
            error = {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"), "code": code}
        else:
            error = {"code": code, "message": message}
        return MockResponse.json({"error": error}, status, headers)

    def normalise(self, operation: str, data: dict[str, Any]) -> dict[str, Any]:
        if "step" not in data and "Step" in data:
            data["step"] = data.pop("Step")  # the English page's spelling
        return data

    def refuse(self, request: MockRequest, body: Body) -> MockResponse | None:
        wrong_path = self._no_endpoint(request)  # the path speaks before the body
        if wrong_path is not None:
            return wrong_path
        if body.error is not None:
            return self.error(request, 400, message=str(body.error))
        assert body.data is not None
        if self.option("step_required") == "true" and "step" not in body.data:
            return self.error(request, 400, message="step is required (Step on the English page)")
        if body.issues:
            issue = body.issues[0]
            field = issue.path.removeprefix("$.").split(".")[0].split("[")[0]
            code = "AI_IMAGE_SIZE_ERROR" if field == "aspect_ratio" else None
            rule = _FIELD_RULES.get(field, issue.message)
            return self.error(request, 400, code, f"{rule}; got {issue.instance!r}")
        return None

    def auth_error(self, request: MockRequest, reason: str) -> MockResponse:
        messages = {
            "missing": "Authorization header is missing; send 'Authorization: Bearer <AccessKey>'",
            "scheme": "Authorization must use the Bearer scheme: 'Bearer <AccessKey>'",
            "invalid": "API key invalid",
        }
        return self.error(request, 401, message=messages[reason])

    def describe_task(self, task: Any) -> dict[str, Any]:
        keep = ("prompts", "batchsize", "aspect_ratio", "width", "height", "step", "seed")
        return {k: task.data[k] for k in keep}

    # --- helpers ---------------------------------------------------------------------

    def _no_endpoint(self, request: MockRequest) -> MockResponse | None:
        """400 NO_ENDPOINT for a path outside the documented prefixes (errorcode page: a 400 reason)."""
        prefixes = self.contract.behaviour.raw["paths"]["prefixes"]
        prefix = request.params.get("prefix", "")
        if self.option("prefixes") == "any" or prefix in prefixes:
            return None
        documented = " or ".join(f"{p}/{{endpointPath}}/images/..." for p in prefixes)
        given = f"{prefix}/{request.params.get('endpoint', '')}"
        return self.error(request, 400, "NO_ENDPOINT",
                          f"No endpoint at {given}: the path is {documented}")

    def _size(self, ratio: str) -> tuple[int, int]:
        if ratio == "9:16":
            w, _, h = self.option("ratio_9_16").partition("x")
            return int(w), int(h)
        width, height = self.contract.behaviour.raw["sizes"][ratio]
        return int(width), int(height)

    @staticmethod
    def _spec(data: dict[str, Any], index: int) -> ImageSpec:
        return ImageSpec.of(
            data["width"], data["height"], fmt="png", prompt=data["prompts"], seed=data["seed"],
            index=index,
        )
