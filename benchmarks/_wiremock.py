"""The same Cloudsway poll answered by WireMock, journal on and bounded like the mock's.

WireMock comes from npm (``npm install --no-save --prefix benchmarks/.wiremock wiremock``: the
package ships WireMock's standalone jar) and runs on a JDK (Debian: ``default-jre-headless``).
``WIREMOCK_JAR`` names another jar. When either is missing the measurement says so and what
to install, instead of a figure.
"""

from __future__ import annotations

__all__ = ["versus", "wiremock_jar"]

import asyncio
import glob
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from typing import Any

from ._proc import ServerProcess, cpu_seconds, stop_process
from ._suite import _capture, _create_tasks, _load, _median, _poll_request, loadgen_name

HERE = os.path.dirname(os.path.abspath(__file__))
INSTALL = ("npm install --no-save --prefix benchmarks/.wiremock wiremock "
           "(and a JDK: apt-get install -y default-jre-headless)")


def wiremock_jar() -> str | None:
    """WireMock's standalone jar: ``WIREMOCK_JAR``, or the npm package's, or None."""
    given = os.environ.get("WIREMOCK_JAR")
    if given:
        return given if os.path.isfile(given) else None
    for root in (os.path.join(HERE, ".wiremock"), os.path.join(HERE, "..", "tests", "js"), os.getcwd()):
        pattern = os.path.join(root, "node_modules", "wiremock", "build", "wiremock-standalone-*.jar")
        found = sorted(glob.glob(pattern))
        if found:
            return found[-1]
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _WireMock:
    """``java -jar wiremock-standalone.jar`` on a free port, its journal bounded to ``journal``."""

    def __init__(self, jar: str, journal: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["java", "-jar", jar, "--port", str(self.port), "--bind-address", "127.0.0.1",
             "--max-request-journal-entries", str(journal), "--disable-banner"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/__admin/health", timeout=2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("WireMock did not start") from None
                time.sleep(0.2)

    def stub(self, path_pattern: str, answer: dict[str, Any]) -> None:
        mapping = {
            "request": {"method": "GET", "urlPathPattern": path_pattern},
            "response": {"status": answer["status"], "headers": dict(answer["headers"]),
                         "base64Body": answer["body_b64"]},
        }
        req = urllib.request.Request(f"{self.url}/__admin/mappings", data=json.dumps(mapping).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 201, r.status

    def journal_size(self) -> int:
        with urllib.request.urlopen(f"{self.url}/__admin/requests?limit=1", timeout=30) as r:
            return int(json.loads(r.read())["meta"]["total"])

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        stop_process(self.proc)


def versus(seconds: float, concurrency: int = 32, rounds: int = 3, journal: int = 10_000) -> dict[str, Any]:
    """The Cloudsway finished-task poll: this mock vs WireMock serving its captured answer."""
    out: dict[str, Any] = {"loadgen": loadgen_name(), "journal": journal, "target": 5.0}
    jar = wiremock_jar()
    if jar is None or shutil.which("java") is None:
        missing = "WireMock's jar" if jar is None else "java"
        out["skipped"] = f"not measured: {missing} not found; install with {INSTALL}"
        return out
    out["jar"] = os.path.basename(jar)
    with ServerProcess("mock", "cloudsway", "--time-scale", "1000") as srv:
        ids = asyncio.run(_create_tasks("cloudsway", srv.urls, 64))
        time.sleep(0.2)  # every task has ended
        make = _poll_request("cloudsway", srv.urls, ids)
        reqs = [make(n) for n in range(len(ids))]
        answer = asyncio.run(_capture(srv.url, reqs[0]))
        wiremock = _WireMock(jar, journal)
        try:
            wiremock.stub("/v2/ai/bench/images/tasks/.*", answer)
            # The JIT compiles WireMock's hot path in its first seconds: it gets a long warm-up,
            # which also fills its journal to its bound, as the mock's is filled below.
            _load(wiremock, reqs, 5.0, concurrency)
            _load(srv, reqs, 1.0, concurrency)
            mine, theirs = [], []
            for _ in range(rounds):
                mine.append(_load(srv, reqs, seconds, concurrency))
                theirs.append(_load(wiremock, reqs, seconds, concurrency))
            out["wiremock_journal_entries"] = wiremock.journal_size()
        finally:
            wiremock.close()
    out["mock"] = _median(mine)
    out["wiremock"] = _median(theirs)
    out["answer_bytes"] = answer["bytes"]
    out["ratio_rps"] = out["mock"]["rps"] / out["wiremock"]["rps"]
    return out

