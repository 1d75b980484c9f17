"""The reference yunyx (SiliconFlow-style) client: one synchronous call, then download at once.

``python -m imagegen_conformance.clients.yunyx``
(or ``imagegen_conformance.clients.yunyx:run``). The links are valid
for an hour, so the images are downloaded straight away. A 503 (code 50505, "overloaded")
means the request was not processed and is retried with backoff; 4xx answers are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._common import ClientEnv, ClientFailure, Http, cli_main, download_images, honours_time_scale, json_of


@honours_time_scale
def run(environ: Mapping[str, str]) -> dict[str, Any]:
    """Generate the images ``IMAGEGEN_REQUEST`` asks for; raise :class:`ClientFailure` if not."""
    env = ClientEnv.read(environ)
    with Http(env, headers={"Authorization": f"Bearer {env.api_key}"}) as http:
        url = f"{env.base_url}/v1/images/generations"
        answer = json_of(
            http.request("POST", url, json=env.request, idempotent=False, retry_5xx=True), "POST", url
        )
        items = answer.get("images") or []
        urls = [i["url"] for i in items if isinstance(i, dict) and isinstance(i.get("url"), str)]
        if not urls or len(urls) != len(items):
            raise ClientFailure(f"the answer carries no image links: {answer!r}")
        return {"images": download_images(http, urls), "seed": answer.get("seed")}


if __name__ == "__main__":
    cli_main(run)
