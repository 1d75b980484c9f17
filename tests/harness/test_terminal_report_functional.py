"""A terminal report piped into a CI log: every evidence line whole, reproduce lines that still work."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

# A client that sends `Token` where Cloudsway wants `Bearer`: a long curl reproduce line.
FAULTY = textwrap.dedent("""
    import json, os, sys, httpx
    base = os.environ["IMAGEGEN_BASE_URL"] + "/v2/ai/a-rather-long-endpoint-path/images"
    r = httpx.post(base + "/generations", json=json.loads(os.environ["IMAGEGEN_REQUEST"]),
                   headers={"Authorization": "Token " + os.environ["IMAGEGEN_API_KEY"]})
    sys.exit(1)
""")


def test_a_piped_run_keeps_each_reproduce_line_whole(tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(FAULTY)
    client = f"{sys.executable} {script}"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    ran = subprocess.run(
        [sys.executable, "-m", "imagegen_conformance", "run", "-p", "cloudsway", "-c", client,
         "-s", "happy-path"], capture_output=True, text=True, timeout=120, env=env,
    )
    assert ran.returncode == 1, ran.stderr
    lines = ran.stdout.splitlines()
    curls = [line for line in lines if line.startswith("    reproduce: curl ")]
    assert curls, ran.stdout
    for line in curls:
        argv = shlex.split(line.removeprefix("    reproduce: "))  # whole: it still parses
        # After the run its port is gone: the curl names serve's default port instead.
        assert argv[4] == "http://127.0.0.1:8701/v2/ai/a-rather-long-endpoint-path/images/generations"
        assert argv[-2] == "--data-raw" and argv[-1].startswith("{") and argv[-1].endswith("}")
    reruns = [line for line in lines if line.startswith("    rerun: ")]
    assert reruns and all(
        line == f"    rerun: imagegen-conformance run --provider cloudsway --client "
                f"{shlex.quote(client)} --scenario happy-path" for line in reruns
    )
    long_lines = [line for line in lines if len(line) > 80]
    assert long_lines  # nothing was wrapped at rich's default 80 columns
