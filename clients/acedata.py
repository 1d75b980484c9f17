"""The reference AceData Flux client: sync, or async with polite polling of /flux/tasks.

``python -m imagegen_conformance.clients.acedata``
(or ``imagegen_conformance.clients.acedata:run``). With ``async: true``
(or a ``callback_url``) in the request it polls ``POST /flux/tasks {"action": "retrieve"}``
every 3 s or more (the official SDK's pace); the task is pending while it has no
``response``, done when ``response.success`` is true, failed when it is false.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ._common import ClientEnv, ClientFailure, Http, cli_main, download_images, honours_time_scale

FIRST_WAIT = 3.0  # [V] the official SDK polls every 3.0 s
MAX_WAIT = 10.0


def _images(answer: Mapping[str, Any]) -> list[str]:
    if answer.get("success") is False:
        error = answer.get("error") or {}
        raise ClientFailure(f"generation failed: {error.get('code')}: {error.get('message')}",
                            kind="failed")
    urls = [d["image_url"] for d in answer.get("data") or []
            if isinstance(d, dict) and isinstance(d.get("image_url"), str)]
    if not urls:
        raise ClientFailure(f"the answer carries no images: {dict(answer)!r}")
    return urls


@honours_time_scale
def run(environ: Mapping[str, str]) -> dict[str, Any]:
    """Generate the images ``IMAGEGEN_REQUEST`` asks for; raise :class:`ClientFailure` if not."""
    env = ClientEnv.read(environ)
    token = environ.get("ACEDATACLOUD_API_TOKEN") or env.api_key
    # Retries of a poll wait no less than the poll interval itself.
    with Http(env, headers={"Authorization": f"Bearer {token}"}, backoff=FIRST_WAIT) as http:
        answer = http.json("POST", f"{env.base_url}/flux/images", json=env.request, idempotent=False)
        asynchronous = bool(env.request.get("async") or env.request.get("callback_url"))
        if not asynchronous:
            return {"images": download_images(http, _images(answer)), "task_id": answer.get("task_id")}
        task_id = answer.get("task_id")
        if not task_id:
            raise ClientFailure(f"the async answer has no task_id: {answer!r}")
        start = time.monotonic()
        wait = FIRST_WAIT
        while True:
            if env.elapsed_since(start) + wait > env.timeout:
                raise ClientFailure(f"task {task_id} did not finish within {env.timeout:g} s",
                                    kind="gave_up")
            env.sleep(wait)
            record = http.json("POST", f"{env.base_url}/flux/tasks",
                               json={"action": "retrieve", "id": task_id}, idempotent=True)
            response = record.get("response")
            if isinstance(response, dict) and (response.get("data") or response.get("success") is False):
                return {"images": download_images(http, _images(response)), "task_id": task_id}
            wait = min(wait * 1.3, MAX_WAIT)


if __name__ == "__main__":
    cli_main(run)
