"""The admin API under /__mock/: reset, journal, faults, clock, tasks. Never a provider path."""

from __future__ import annotations

import hmac
import math
from typing import TYPE_CHECKING, Any

from ._faults import FAULTS, FaultError, FaultNotApplicable, FaultSpec
from ._http import BodyError, MockRequest, MockResponse, loads

if TYPE_CHECKING:
    from ._server import MockServer

ADMIN_TOKEN_HEADER = "X-Admin-Token"

ENDPOINTS = {
    "GET /__mock/health": "liveness and configuration summary",
    "POST /__mock/reset": "forget tasks, journal, run faults and rate-limit state",
    "GET /__mock/journal?since=SEQ": "exchanges recorded after SEQ (secrets redacted)",
    "DELETE /__mock/journal": "empty the journal",
    "GET /__mock/faults": "the run's active faults and the fault catalogue",
    "POST /__mock/faults": 'add faults: {"spec": "http:503;op=getImageTask;times=2"} or a list',
    "DELETE /__mock/faults": "remove every run fault",
    "GET /__mock/clock": "provider time and the clock's kind",
    "POST /__mock/clock/advance": 'advance a manual clock: {"seconds": 5}',
    "GET /__mock/deliveries": "webhooks and callbacks: delivered, failed, refused, pending",
    "GET /__mock/tasks": "every task the mock holds, with its current state",
    "GET /__mock/tasks/{id}": "one task",
}


def _err(status: int, message: str) -> MockResponse:
    return MockResponse.json({"error": message}, status)


def _body(request: MockRequest) -> Any:
    if not request.body.strip():
        return {}
    try:
        return loads(request.body)
    except BodyError as exc:
        raise FaultError(f"admin request body is not JSON: {exc}") from exc


async def _shared_admin(
    server: MockServer, path: str, method: str, request: MockRequest
) -> MockResponse | None:
    """The endpoints that read or steer state every worker shares (``--store redis://``)."""
    shared = server.shared
    assert shared is not None
    if path == "/health" and method == "GET":
        return MockResponse.json({
            "status": "ok", "provider": server.provider_id, "roles": list(server.roles),
            "clock": server.clock.kind, "time_scale": server.clock.scale,
            "lifecycle": server.lifecycle, "options": server.options,
            "tasks": await shared.task_count(), "errors": server.errors[-20:],
            "store": shared.public_url, "worker": shared.worker,
        })
    if path == "/reset" and method == "POST":
        await shared.reset()
        return MockResponse.json({"reset": True})
    if path == "/journal" and method == "GET":
        return MockResponse.json(await shared.journal(int(request.query.get("since", "0"))))
    if path == "/journal" and method == "DELETE":
        await shared.clear_journal()
        server.journal.clear()
        return MockResponse.json({"cleared": True})
    if path == "/faults":
        if method == "GET":
            return MockResponse.json({"active": await shared.faults(), "catalogue": FAULTS})
        if method == "POST":
            data = _body(request)
            items = data if isinstance(data, list) else [data]
            specs = [FaultSpec.parse(i) if isinstance(i, str) else FaultSpec.from_dict(i) for i in items]
            server.check_faults(specs, "POST /__mock/faults")  # all or none
            await shared.add_faults(specs)
            return MockResponse.json({"active": await shared.faults()}, 201)
        if method == "DELETE":
            await shared.clear_faults()
            return MockResponse.json({"active": []})
    if path == "/clock/advance" and method == "POST":
        data = _body(request)
        seconds = data.get("seconds") if isinstance(data, dict) else None
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            return _err(400, 'body must be {"seconds": <non-negative number>}')
        try:
            now = await shared.advance(float(seconds))
        except RuntimeError as exc:
            return _err(409, str(exc))
        return MockResponse.json({"now": now, "kind": server.clock.kind})
    if path == "/deliveries" and method == "GET":
        return MockResponse.json({"deliveries": await shared.deliveries()})
    return None  # tasks and the clock read the state the session loaded


def task_view(server: MockServer, task: Any) -> dict[str, Any]:
    now = server.clock.now()
    state, spent, length = task.phase(now)
    finished = task.finished_at(now)
    return {
        "id": task.id,
        "state": state,
        "terminal": state in task.terminal,
        "created_at": task.created_at,
        "finished_at": finished,
        "seconds_in_state": spent,
        "state_length": None if math.isinf(length) else length,
        "polls": task.polls,
        "mode": task.mode,
        "data": server.provider.describe_task(task),
    }


async def handle_admin(server: MockServer, request: MockRequest) -> MockResponse:
    if server.admin_token is not None:
        given = request.headers.get(ADMIN_TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), server.admin_token.encode()):
            return _err(401, f"the admin API needs the {ADMIN_TOKEN_HEADER} header (--admin-token)")
    path = request.path[len("/__mock") :].rstrip("/") or "/"
    method = request.method
    try:
        extension = server.admin_routes.get((method, path))
        if extension is not None:
            return await extension[0](request)
        if server.shared is not None:
            answer = await _shared_admin(server, path, method, request)
            if answer is not None:
                return answer
        if path == "/" and method == "GET":
            extra = {f"{m} /__mock{p}": doc for (m, p), (_, doc) in server.admin_routes.items()}
            return MockResponse.json(
                {"provider": server.provider_id, "endpoints": {**ENDPOINTS, **extra}}
            )
        if path == "/health" and method == "GET":
            return MockResponse.json({
                "status": "ok",
                "provider": server.provider_id,
                "roles": list(server.roles),
                "clock": server.clock.kind,
                "time_scale": server.clock.scale,
                "lifecycle": server.lifecycle,
                "options": server.options,
                "tasks": len(server.tasks),
                "errors": server.errors[-20:],
            })
        if path == "/reset" and method == "POST":
            server.reset()
            return MockResponse.json({"reset": True})
        if path == "/journal":
            if method == "GET":
                since = int(request.query.get("since", "0"))
                entries = [e.to_dict() for e in server.journal.entries(since)]
                return MockResponse.json({"last_seq": server.journal.last_seq, "exchanges": entries})
            if method == "DELETE":
                server.journal.clear()
                return MockResponse.json({"cleared": True})
        if path == "/faults":
            if method == "GET":
                return MockResponse.json({"active": server.faults.specs(), "catalogue": FAULTS})
            if method == "POST":
                data = _body(request)
                items = data if isinstance(data, list) else [data]
                specs = [
                    FaultSpec.parse(i) if isinstance(i, str) else FaultSpec.from_dict(i) for i in items
                ]
                server.check_faults(specs, "POST /__mock/faults")  # all or none
                for spec in specs:
                    server.add_fault(spec)
                return MockResponse.json({"active": server.faults.specs()}, 201)
            if method == "DELETE":
                server.faults.clear()
                return MockResponse.json({"active": []})
        if path == "/clock" and method == "GET":
            return MockResponse.json(
                {"now": server.clock.now(), "kind": server.clock.kind, "scale": server.clock.scale}
            )
        if path == "/clock/advance" and method == "POST":
            data = _body(request)
            seconds = data.get("seconds") if isinstance(data, dict) else None
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                return _err(400, 'body must be {"seconds": <non-negative number>}')
            try:
                now = server.clock.advance(float(seconds))
            except RuntimeError as exc:
                return _err(409, str(exc))
            return MockResponse.json({"now": now, "kind": server.clock.kind})
        if path == "/deliveries" and method == "GET":
            return MockResponse.json(
                {"deliveries": [d.to_dict() for d in server.deliveries.records()]}
            )
        if path == "/tasks" and method == "GET":
            return MockResponse.json({"tasks": [task_view(server, t) for t in server.tasks]})
        if path.startswith("/tasks/") and method == "GET":
            task = server.tasks.get(path[len("/tasks/") :])
            if task is None:
                return _err(404, "no such task (unknown id, or expired after its retention)")
            return MockResponse.json(task_view(server, task))
    except FaultNotApplicable as exc:
        # Understood but meaningless for this provider: its own 400, with the contract's reason.
        response = server.provider.error(request, 400, message=str(exc))
        response.headers["X-Mock-Error"] = "fault-not-applicable"
        return response
    except (FaultError, ValueError) as exc:
        return _err(400, str(exc))
    return _err(404, f"no admin endpoint {method} {request.path}; see GET /__mock/")
