"""A Cloudsway client written like production code: real-second sleeps, no IMAGEGEN_TIME_SCALE.

Flags switch on one behaviour each (the frame tests run it as a command):
``--pause S`` seconds between polls (0: a tight loop), ``--cpu-ms N`` real CPU burnt before each
request (a slow client), ``--thread-wait`` waits between polls on ``threading.Event().wait``,
``--report-clock`` adds the client's own ``time.time()`` at each request to its output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

_last_cpu = [0.0]


def _cpu() -> float:
    """Real CPU seconds of this process so far. Not ``time.process_time``: libfaketime scales
    ``CLOCK_PROCESS_CPUTIME_ID`` like every other clock (25 ms of it is 0.25 real ms at x100);
    ``getrusage`` is left alone."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def burn(cpu_ms: float) -> None:
    """Make each request cost ``cpu_ms`` of real CPU in all, its own work included."""
    if cpu_ms > 0:
        while _cpu() - _last_cpu[0] < cpu_ms / 1000:
            pass
    _last_cpu[0] = _cpu()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause", type=float, default=1.0)
    parser.add_argument("--cpu-ms", type=float, default=0.0)
    parser.add_argument("--thread-wait", action="store_true")
    parser.add_argument("--report-clock", action="store_true")
    args = parser.parse_args()
    env = os.environ
    base = env["IMAGEGEN_BASE_URL"] + "/v2/ai/realtime/images"
    headers = {"Authorization": f"Bearer {env['IMAGEGEN_API_KEY']}", "Content-Type": "application/json"}
    clock: list[float] = []

    def call(method: str, url: str, body: object = None) -> dict[str, object]:
        burn(args.cpu_ms)
        clock.append(time.time())
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    deadline = time.monotonic() + 300  # minutes, as a production client allows
    task = call("POST", f"{base}/generations", json.loads(env["IMAGEGEN_REQUEST"]))
    while time.monotonic() < deadline:
        if args.thread_wait:
            threading.Event().wait(args.pause)
        elif args.pause:
            time.sleep(args.pause)
        status = call("GET", f"{base}/tasks/{task['taskId']}")
        if status["status"] == "failed":
            print(json.dumps({"error": {"message": "the task failed"}}))
            return 1
        if status["status"] == "completed":
            images = []
            for i, url in enumerate(status["imageUrls"]):  # type: ignore[arg-type]
                path = Path(env["IMAGEGEN_OUTPUT_DIR"]) / f"{i}.png"
                with urllib.request.urlopen(url, timeout=30) as image:
                    path.write_bytes(image.read())
                images.append({"url": url, "path": str(path)})
            out: dict[str, object] = {"images": images}
            if args.report_clock:
                out["clock"] = clock
            print(json.dumps(out))
            return 0
    print(json.dumps({"error": {"message": "gave up"}}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
