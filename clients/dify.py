"""The reference Dify workflow client: blocking or streaming, files downloaded at once.

``python -m imagegen_conformance.clients.dify``
(or ``imagegen_conformance.clients.dify:run``). ``IMAGEGEN_BASE_URL`` is
the host; the API is under ``/v1``. Streaming reads every ``data:`` line to the final
``workflow_finished`` or ``error`` event and ignores everything else (the bare
``event: ping`` keep-alives). File links are relative and signed for 300 s: they are
resolved against the URL that returned them (RFC 3986: ``/files/...`` is on the host, whatever
base path the API has) and downloaded straight away. A stream that outlasts the client's
deadline is given up and the task stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

from ._common import ClientEnv, ClientFailure, Http, cli_main, download_images, honours_time_scale, json_of

FILE_KEYS = ("files",)


def _file_urls(base: str, outputs: Any) -> list[str]:
    """The file links in ``outputs``; ``base`` is the URL of the answer that held them."""
    urls: list[str] = []
    if isinstance(outputs, dict):
        for value in outputs.values():
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("url"), str):
                    urls.append(urljoin(base, item["url"]))
    return urls


def _finished(base: str, data: Mapping[str, Any]) -> list[str]:
    status = data.get("status")
    if status != "succeeded":
        raise ClientFailure(f"the workflow ended {status}: {data.get('error')}", kind="failed")
    urls = _file_urls(base, data.get("outputs"))
    if not urls:
        raise ClientFailure("the workflow succeeded without image files")
    return urls


@honours_time_scale
def run(environ: Mapping[str, str]) -> dict[str, Any]:
    """Run the workflow in ``IMAGEGEN_REQUEST``; raise :class:`ClientFailure` on failure."""
    env = ClientEnv.read(environ)
    base = env.base_url
    url = f"{base}/v1/workflows/run"
    with Http(env, headers={"Authorization": f"Bearer {env.api_key}"}) as http:
        if env.request.get("response_mode") != "streaming":
            answer = json_of(http.request("POST", url, json=env.request, idempotent=False), "POST", url)
            return {"images": download_images(http, _finished(url, answer.get("data") or {}))}
        start = time.monotonic()
        task_id = None
        urls: list[str] | None = None
        with http.client.stream("POST", url, json=env.request) as stream:
            if stream.status_code == 429:
                stream.read()
                env.sleep(float(stream.headers.get("Retry-After", "1")))
                return run(environ)
            if stream.status_code >= 400:
                stream.read()
                raise ClientFailure(f"POST {url} answered HTTP {stream.status_code}: {stream.text[:300]}",
                                    status=stream.status_code)
            for line in stream.iter_lines():
                if env.elapsed_since(start) > env.timeout:
                    break
                if not line.startswith("data: "):
                    continue  # "event: ping", blank lines, comments
                event = json.loads(line[6:])
                task_id = event.get("task_id") or task_id
                kind = event.get("event")
                if kind == "error":
                    raise ClientFailure(f"the stream reported {event.get('code')}: {event.get('message')}",
                                        kind="failed")
                if kind == "workflow_finished":
                    urls = _finished(url, event.get("data") or {})
                    break
        if urls is None:
            if task_id:
                http.request("POST", f"{base}/v1/workflows/tasks/{task_id}/stop",
                             json={"user": env.request.get("user", "")}, idempotent=True)
            raise ClientFailure(f"the workflow did not finish within {env.timeout:g} s (stopped)",
                                kind="gave_up")
        return {"images": download_images(http, urls)}


if __name__ == "__main__":
    cli_main(run)
