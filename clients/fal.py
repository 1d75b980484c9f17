"""The reference fal client: submit to the queue, follow the returned URLs, fetch the result.

``python -m imagegen_conformance.clients.fal``
(or ``imagegen_conformance.clients.fal:run``). It never rebuilds a queue
URL: it polls the ``status_url`` and reads the ``response_url`` the submit answer gave
(they drop the model's subpath). Auth is ``Key <FAL_KEY>``; ``FAL_KEY`` wins over
``IMAGEGEN_API_KEY``. ``FAL_MODEL`` picks the model path (default ``fal-ai/flux-1/dev``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ._common import ClientEnv, ClientFailure, Http, cli_main, download_images, honours_time_scale, json_of

FIRST_WAIT = 0.5  # provider seconds; fal asks for no less than 0.1 s between polls
MAX_WAIT = 5.0


@honours_time_scale
def run(environ: Mapping[str, str]) -> dict[str, Any]:
    """Generate the images ``IMAGEGEN_REQUEST`` asks for; raise :class:`ClientFailure` if not."""
    env = ClientEnv.read(environ)
    key = environ.get("FAL_KEY") or env.api_key
    model = environ.get("FAL_MODEL", "fal-ai/flux-1/dev")
    base = environ.get("IMAGEGEN_BASE_URL_QUEUE") or env.base_url
    with Http(env, headers={"Authorization": f"Key {key}"}) as http:
        submitted = http.json("POST", f"{base}/{model}", json=env.request, idempotent=False)
        try:
            status_url, response_url = submitted["status_url"], submitted["response_url"]
        except KeyError as exc:
            raise ClientFailure(f"the submit answer lacks {exc}: {submitted!r}") from None
        start = time.monotonic()
        wait = FIRST_WAIT
        while True:
            status = http.json("GET", status_url, idempotent=True)
            if status.get("status") == "COMPLETED":
                break
            if env.elapsed_since(start) + wait > env.timeout:
                http.request("PUT", submitted.get("cancel_url") or f"{response_url}/cancel",
                             idempotent=True)
                raise ClientFailure(f"request {submitted.get('request_id')} did not finish "
                                    f"within {env.timeout:g} s (cancelled)", kind="gave_up")
            env.sleep(wait)
            wait = min(wait * 1.5, MAX_WAIT)
        if status.get("error"):
            raise ClientFailure(f"the request ended with {status.get('error')!r}", kind="failed")
        answer = http.request("GET", response_url, idempotent=True)
        result = json_of(answer, "GET", response_url)
        urls = [i["url"] for i in result.get("images") or []
                if isinstance(i, dict) and isinstance(i.get("url"), str)]
        if not urls:
            raise ClientFailure(f"the result carries no images: {result!r}")
        return {"images": download_images(http, urls), "request_id": submitted.get("request_id")}


if __name__ == "__main__":
    cli_main(run)
