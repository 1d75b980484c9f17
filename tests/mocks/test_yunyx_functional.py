"""yunyx over real sockets: the seed's requests snippet against `serve`, curl, the openai SDK."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import requests
from PIL import Image

from imagegen_conformance.mocks import MockServer, mock_router

CLI = [sys.executable, "-m", "imagegen_conformance"]
# The seed's Python example, verbatim; only the URL's host is replaced (HOST below).
SEED_SNIPPET = '''import requests

url = "https://api.yunyx.top/v1/images/generations"
headers = {
"Authorization": "Bearer YOUR_API_KEY",
"Content-Type": "application/json"
}
data = {
"model": "FLUX.1-schnell",
"prompt": "an island near sea, with seagulls, moon shining over the sea, light house, boats in the background, fish flying over the sea",
"image_size": "1024x1024",
"prompt_enhancement": True
}

response = requests.post(url, headers=headers, json=data)
print(response.json())
'''  # noqa: E501 - the seed's own line, verbatim


def run_seed_snippet(base: str, tmp_path: Path) -> str:
    """Run the seed's snippet as its own program; return what it printed."""
    script = tmp_path / "seed_example.py"
    script.write_text(SEED_SNIPPET.replace("https://api.yunyx.top", base))
    out = subprocess.run([sys.executable, str(script)], check=True, capture_output=True, text=True,
                         timeout=30).stdout
    return out.strip()


def image_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_seed_requests_snippet_against_serve(serve_cli: Any, tmp_path: Path) -> None:
    proc = serve_cli("--provider", "yunyx", "--port", "0", "--time-scale", "100")
    name, base = proc.readline().split()
    assert name == "yunyx"
    result = ast.literal_eval(run_seed_snippet(base, tmp_path))  # print() of a dict
    assert set(result) == {"images", "data", "timings", "seed", "shared_id", "created"}
    [image] = result["images"]
    assert "&Expires=" in image["url"] and "&Signature=" in image["url"]  # requests decoded \u0026
    download = requests.get(image["url"], timeout=10)
    assert download.status_code == 200 and download.headers["Content-Type"] == "image/png"
    assert image_size(download.content) == (1024, 1024)
    # curl shows what is on the wire: the & of the link written as \u0026, as the seed warns.
    assert shutil.which("curl"), "curl is needed to read the raw body"
    raw = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{base}/v1/images/generations", "-H", "Authorization: Bearer k",
         "-H", "Content-Type: application/json", "-d", '{"prompt": "x"}'],
        check=True, capture_output=True, timeout=20,
    ).stdout
    assert b"\\u0026Expires=" in raw and b"&" not in raw
    assert proc.close() == 0


def test_seed_snippet_with_a_wrong_key_prints_the_bare_string(serve_cli: Any,
                                                               tmp_path: Path) -> None:
    proc = serve_cli("--provider", "siliconflow", "--port", "0", "--api-key", "real-key")
    _, base = proc.readline().split()
    # response.json() is the bare JSON string "Invalid token"; print() shows it unquoted.
    assert run_seed_snippet(base, tmp_path) == "Invalid token"
    assert proc.close() == 0


# --- the openai package, pointed at the mock ---------------------------------------------


async def test_openai_images_generate_returns_data_and_created(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("yunyx", time_scale=100, seed=3)
    async with openai.AsyncOpenAI(base_url=running.url + "/v1", api_key="k") as client:
        result = await client.images.generate(
            model="stable-diffusion-3-5-large", prompt="a lighthouse",
            extra_body={"image_size": "576x1024", "seed": 42, "batch_size": 2},
        )
    # [V-3p] captured SiliconFlow answers carry data[] and created, which the SDK reads.
    assert result.data is not None and len(result.data) == 2
    assert abs(result.created - running.server.clock.now()) < 60
    extra = result.model_extra or {}
    assert extra["seed"] == 42 and [i["url"] for i in extra["images"]] == [d.url for d in result.data]
    async with httpx.AsyncClient() as http:
        for item in result.data:
            assert item.url is not None and "/outputs/" in item.url
            download = await http.get(item.url)
            assert download.headers["Content-Type"] == "image/png"
            assert image_size(download.content) == (576, 1024)
    sent = json.loads(running.server.journal.entries()[0].request_body)
    assert sent == {"model": "stable-diffusion-3-5-large", "prompt": "a lighthouse",
                    "image_size": "576x1024", "seed": 42, "batch_size": 2}


async def test_siliconflow_alias_takes_siliconflows_models_sizes_and_codes(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("siliconflow", time_scale=100, seed=3)
    async with openai.AsyncOpenAI(base_url=running.url + "/v1", api_key="k") as client:
        kolors = await client.images.generate(model="Kwai-Kolors/Kolors", prompt="a lighthouse",
                                              extra_body={"image_size": "960x1280"})
        flux = await client.images.generate(model="black-forest-labs/FLUX.1-schnell", prompt="x")
        refusals = []
        for kwargs in ({"model": "FLUX.1-schnell"},  # the seed's id is not SiliconFlow's
                       {"model": "Kwai-Kolors/Kolors", "extra_body": {"image_size": "576x1024"}},
                       {"extra_body": {"image_size": "1024x1024"}}):  # model is required
            with pytest.raises(openai.BadRequestError) as info:
                await client.images.generate(prompt="x", **kwargs)  # type: ignore[arg-type]
            refusals.append(info.value.body)
    assert kolors.data is not None and flux.data is not None
    async with httpx.AsyncClient() as http:
        assert kolors.data[0].url is not None and flux.data[0].url is not None
        assert image_size((await http.get(kolors.data[0].url)).content) == (960, 1280)
        assert image_size((await http.get(flux.data[0].url)).content) == (1024, 1024)
    assert [body["code"] for body in refusals] == [20012, 20012, 20012]  # type: ignore[index]
    assert refusals[0]["message"] == "Model does not exist. Please check it carefully."  # type: ignore[index]
    assert "image_size" in refusals[1]["data"]  # type: ignore[index]
    # The same sizes and ids under yunyx are the seed's refusals.
    yunyx = await serve_mock("yunyx", clock="manual")
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{yunyx.url}/v1/images/generations", headers={"Authorization": "Bearer k"},
                                 json={"model": "Kwai-Kolors/Kolors", "prompt": "x"})
    assert answer.status_code == 404


async def test_openai_maps_each_error_to_its_exception(serve_mock) -> None:  # type: ignore[no-untyped-def]
    keyed = await serve_mock("yunyx", clock="manual", api_keys=["real-key"])
    cases: list[tuple[Any, dict[str, Any], type[openai.APIStatusError], Any]] = [
        (keyed, {"model": "FLUX.1-schnell"}, openai.AuthenticationError, "Invalid token"),
        (await serve_mock("yunyx", clock="manual"), {"model": "FLUX.2"}, openai.NotFoundError,
         "Model does not exist. Please check it carefully."),
        (await serve_mock("yunyx", clock="manual"),
         {"model": "FLUX.1-schnell", "extra_body": {"image_size": "9x9"}}, openai.BadRequestError, None),
        (await serve_mock("yunyx", clock="manual", faults=["rate_limit:0"]), {"model": "FLUX.1-schnell"},
         openai.RateLimitError, None),
        (await serve_mock("yunyx", clock="manual", faults=["http:503"]), {"model": "FLUX.1-schnell"},
         openai.InternalServerError, None),
    ]

    async def attempt(running: Any, kwargs: dict[str, Any]) -> openai.APIStatusError:
        async with openai.AsyncOpenAI(base_url=running.url + "/v1", api_key="wrong") as client:
            with pytest.raises(openai.APIStatusError) as info:
                await client.images.generate(prompt="x", **kwargs)
            return info.value

    raised = await asyncio.gather(*(attempt(r, k) for r, k, _, _ in cases))
    for (running, _, cls, body), exc in zip(cases, raised, strict=True):
        assert type(exc) is cls
        if body is not None:
            assert exc.body == body
        retried = exc.status_code >= 429  # openai retries 429 and 5xx, never 4xx
        assert len(running.server.journal.entries()) == (3 if retried else 1)
    assert raised[2].body["code"] == 20015 and "image_size" in raised[2].body["data"]  # type: ignore[index]
    assert "code" not in raised[3].body and raised[4].body["code"] == 50505  # type: ignore[operator,index]


# --- links over sockets, and the alias ---------------------------------------------------


async def test_link_expires_one_hour_of_provider_time_after_issue(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("yunyx", clock="manual", seed=5)
    async with httpx.AsyncClient() as http:
        pending = asyncio.ensure_future(http.post(f"{running.url}/v1/images/generations",
                                                  headers={"Authorization": "Bearer k"},
                                                  json={"prompt": "x", "image_size": "512x1024"}))
        await asyncio.sleep(0.1)
        running.server.clock.advance(5)
        url = (await pending).json()["images"][0]["url"]
        assert image_size((await http.get(url)).content) == (512, 1024)
        running.server.clock.advance(3599)
        assert (await http.get(url)).status_code == 200
        running.server.clock.advance(2)
        expired = await http.get(url)
        assert expired.status_code == 403 and b"Request has expired" in expired.content


def test_respx_adapter_serves_the_real_host_in_process() -> None:
    # openai 3.x sends through httpx2, which respx does not patch; a plain httpx client is used.
    server = MockServer("yunyx", time_scale=1000, seed=6)
    with mock_router(server), httpx.Client() as client:
        answer = client.post("https://api.yunyx.top/v1/images/generations",
                             headers={"Authorization": "Bearer k"},
                             json={"prompt": "x", "image_size": "768x1024"})
        assert b"\\u0026" in answer.content
        url = answer.json()["images"][0]["url"]
        assert url.startswith("https://api.yunyx.top/outputs/")
        assert image_size(client.get(url).content) == (768, 1024)
    assert [e.operation for e in server.journal.entries()] == ["generateImages", "getImageFile"]
