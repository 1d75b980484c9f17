"""Official provider SDKs as clients under test, through the CLI like any user's client."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from imagegen_conformance.harness.cli import main

# fal-client, unmodified: it reads FAL_KEY and FAL_QUEUE_RUN_HOST, hard-codes https and
# trusts SSL_CERT_FILE; `run --tls` provides all three.
FAL_SDK_CLIENT = textwrap.dedent("""
    import json, os, fal_client
    result = fal_client.subscribe("fal-ai/flux-1/dev", arguments=json.loads(os.environ["IMAGEGEN_REQUEST"]))
    print(json.dumps({"images": [image["url"] for image in result["images"]]}))
""")


def test_fal_client_through_the_harness(tmp_path: Path) -> None:
    script = tmp_path / "fal_sdk_client.py"
    script.write_text(FAL_SDK_CLIENT)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, [
        "run", "-p", "fal", "--tls", "-c", f"{sys.executable} {script}", "--report", "json",
        "--out", str(out), "-s", "happy-path", "-s", "transient-status-503", "--startup-slack", "20",
    ])
    assert result.exit_code == 1, result.stderr
    scenarios = {s["scenario"]: s for s in json.loads(out.read_text())["scenarios"]}
    happy = scenarios["happy-path"]
    assert happy["deviations"] == [] and happy["result"]["ok"]
    assert [(i["width"], i["height"]) for i in happy["result"]["images"]] == [(1024, 768)]
    headers = {k.lower(): v for k, v in happy["exchanges"][0]["request_headers"].items()}
    assert headers["authorization"] == "Key <redacted>"
    # A finding, not a test artefact: fal-client retries a 503 only when its body looks like
    # an nginx page without x-fal-request-id (providers.md §3), so a runner's 503 is fatal.
    rules = {d["rule"] for d in scenarios["transient-status-503"]["deviations"]}
    assert rules == {"client.retries-transient", "scenario.outcome"}
