"""The reference Cloudsway client: create a task, poll it politely, download the images.

``python -m imagegen_conformance.clients.cloudsway``
(or ``imagegen_conformance.clients.cloudsway:run``). Variables:
``IMAGEGEN_BASE_URL`` (host), ``IMAGEGEN_API_KEY``, ``IMAGEGEN_REQUEST`` (the create body),
``IMAGEGEN_OUTPUT_DIR``, ``IMAGEGEN_TIME_SCALE``, ``IMAGEGEN_TIMEOUT`` and
``CLOUDSWAY_ENDPOINT`` (the endpoint path issued with the key; default ``imagegen``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ._common import ClientEnv, ClientFailure, Http, cli_main, download_images, honours_time_scale

FIRST_WAIT = 1.0  # provider seconds: schnell needs a few seconds, no need to ask at once
MAX_WAIT = 5.0


@honours_time_scale
def run(environ: Mapping[str, str]) -> dict[str, Any]:
    """Generate the images ``IMAGEGEN_REQUEST`` asks for; raise :class:`ClientFailure` if not."""
    env = ClientEnv.read(environ)
    endpoint = environ.get("CLOUDSWAY_ENDPOINT", "imagegen")
    base = f"{env.base_url}/v2/ai/{endpoint}/images"
    with Http(env, headers={"Authorization": f"Bearer {env.api_key}"}) as http:
        created = http.json("POST", f"{base}/generations", json=env.request, idempotent=False)
        task_id = created.get("taskId")
        if not task_id:
            raise ClientFailure(f"create answered without a taskId: {created!r}")
        start = time.monotonic()
        wait = FIRST_WAIT
        while True:
            if env.elapsed_since(start) + wait > env.timeout:
                raise ClientFailure(
                    f"task {task_id} did not finish within {env.timeout:g} s", kind="gave_up"
                )
            env.sleep(wait)
            task = http.json("GET", f"{base}/tasks/{task_id}", idempotent=True)
            status = task.get("status")
            if status == "completed" or task.get("completed") is True:
                urls = task.get("imageUrls") or []
                if not urls:
                    raise ClientFailure(f"task {task_id} completed without images")
                return {"images": download_images(http, urls), "task_id": task_id}
            if status == "failed":
                raise ClientFailure(
                    f"task {task_id} failed: {task.get('message', 'no reason given')}", kind="failed"
                )
            wait = min(wait * 1.5, MAX_WAIT)


if __name__ == "__main__":
    cli_main(run)
