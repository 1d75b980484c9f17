"""Run the benchmarks in one go, print one table, and write the figures as JSON.

    python -m benchmarks [--seconds 3] [--json bench.json] [--only NAME ...]

Measurements (issue 9), each next to a baseline measured in the same run where one applies:
  throughput  create+poll of the Cloudsway mock vs a bare aiohttp handler
  polls       each provider's status poll vs bare aiohttp serving the same bytes (target >= 0.7)
  runs        yunyx generation (>= 0.6) and Dify streaming run (>= 0.5) vs the same bytes bare
  wiremock    the Cloudsway poll vs WireMock with a journal of 10,000, same answer (target >= 5x)
  latency     100 pollers with 50 ms injected latency vs the ideal 2,000/s    (target >= 90%)
  proxy       the validating proxy's added latency, median and p99           (target median < 1 ms)
  streams     10,000 Dify SSE streams: opened < 5 s, every ping within 10%, memory per stream
  tasks       memory of 100,000 retained tasks                               (target < 150 MB)
  bound       a create refused at the task store's bound (100k live tasks)   (target < 1 ms)
  million     memory of 1,000,000 retained tasks                             (target < 500 MB)
  images      distinct 1024x1024 PNG links vs Pillow's encoder, same picture (target >= 4x)
  catalogue   every scenario of every provider with the reference clients    (target < 20 s)
  startup     `serve --provider all` to its first answered request            (target < 1.5 s)
  workers     status polls: bare, 1 worker in memory, 1 and 2 workers on Redis (target 2 vs 1 >= 1.6x)
  storecost   CPU per poll in process: memory store vs Redis store (mock and redis-server)
  lifecycles  10,000 concurrent lifecycles across 2 workers on Redis

Not part of the test suite. The machine's cores are shared by the load generator and the
server: throughput ratios are judged on the server's capacity (requests per second of its own
CPU, read from /proc), achieved rates are shown beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from . import _engine, _suite, _throughput, _wiremock, _workers

NAMES = ("throughput", "polls", "runs", "wiremock", "latency", "proxy", "streams", "tasks", "bound",
         "million", "images", "catalogue", "startup", "workers", "storecost", "lifecycles")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def _mark(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]missed[/]"


def _rows(name: str, r: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(measure, baseline, measured, ratio, target, verdict) rows of one measurement."""
    rows = []
    if name == "throughput":
        rows.append(("create+poll req/s, achieved (cloudsway)", f"{r['bare']['rps']:.0f}",
                     f"{r['mock']['rps']:.0f}", f"{r['ratio_rps']:.2f}", "", ""))
        rows.append(("create+poll req per server CPU-s (cloudsway)", f"{r['bare']['per_cpu_second']:.0f}",
                     f"{r['mock']['per_cpu_second']:.0f}", f"{r['ratio_capacity']:.2f}", "≥ 0.60",
                     _mark(r["ratio_capacity"] >= 0.6)))
    elif name == "polls":
        for provider, p in r["providers"].items():
            if p is None:
                rows.append((f"status poll: {provider}", "", "no status endpoint (synchronous)", "", "", ""))
                continue
            bare = p["bare"]
            rows.append((f"status poll req/s, c32: {provider} ({p['answer_bytes']} B, same bytes bare)",
                         f"{bare['rps']:.0f} ({bare['per_cpu_second']:.0f} per CPU-s)",
                         f"{p['rps']:.0f} ({p['per_cpu_second']:.0f} per CPU-s)",
                         f"{p['ratio_rps']:.2f}", f"≥ {r['target']:.2f}",
                         _mark(p["ratio_rps"] >= r["target"])))
    elif name == "runs":
        for provider, what in (("yunyx", "generation"), ("dify", "streaming run")):
            p, target = r[provider], r["targets"][provider]
            shape = f"{p['answer_bytes']} B" + (f" in {p['chunks']} chunks" if "chunks" in p else "")
            bare = p["bare"]
            rows.append((f"{provider} {what} req/s, c32 ({shape}, same bytes bare)",
                         f"{bare['rps']:.0f} ({bare['per_cpu_second']:.0f} per CPU-s)",
                         f"{p['rps']:.0f} ({p['per_cpu_second']:.0f} per CPU-s)",
                         f"{p['ratio_rps']:.2f}", f"≥ {target:.2f}", _mark(p["ratio_rps"] >= target)))
    elif name == "wiremock":
        if "skipped" in r:
            rows.append(("cloudsway poll vs WireMock (journal 10,000)", "", r["skipped"], "", "≥ 5x", ""))
        else:
            w, m = r["wiremock"], r["mock"]
            rows.append((f"cloudsway poll req/s, c32, journal {r['journal']:,} (WireMock: "
                         f"{r['wiremock_journal_entries']:,} held)",
                         f"WireMock {w['rps']:.0f} ({w['per_cpu_second']:.0f} per CPU-s)",
                         f"{m['rps']:.0f} ({m['per_cpu_second']:.0f} per CPU-s)", f"{r['ratio_rps']:.1f}x",
                         "≥ 5x", _mark(r["ratio_rps"] >= r["target"])))
    elif name == "latency":
        for label, key in (("independent", "independent"), ("all in step", "in_step")):
            p = r[key]
            rows.append((f"100 pollers, 50 ms latency, {label}: req/s",
                         f"{r['ideal_rps']:.0f} ideal; bare {r['bare']['rps']:.0f}",
                         f"{p['rps']:.0f} (p99 {p['p99_ms']:.0f} ms)", f"{p['fraction']:.0%}",
                         "≥ 90%" if key == "independent" else "",
                         _mark(p["fraction"] >= 0.9) if key == "independent" else ""))
    elif name == "proxy":
        rows.append(("proxy added latency, median", f"{r['direct_median_ms']:.2f} ms direct",
                     f"{r['proxy_median_ms']:.2f} ms", f"+{r['added_median_ms']:.2f} ms", "< 1 ms",
                     _mark(r["added_median_ms"] < 1.0)))
        rows.append(("proxy added latency, p99", f"{r['direct_p99_ms']:.2f} ms direct",
                     f"{r['proxy_p99_ms']:.2f} ms", f"+{r['added_p99_ms']:.2f} ms", "", ""))
    elif name == "streams":
        rows.append((f"{r['streams']:,} Dify SSE streams: memory", f"{r['rss_before_mb']:.0f} MB idle",
                     f"+{r['rss_delta_mb']:.1f} MB", f"{r['kb_per_stream']:.1f} KB/stream", "", ""))
        rows.append(("  all opened (client and server share the 2 cores)",
                     f"client {r['client_open_cpu_s']:.1f} CPU-s",
                     f"{r['open_s']:.2f} s (server {r['server_cpu_ms_per_stream']:.2f} CPU-ms a stream)", "",
                     f"< {r['target_open_s']:.0f} s",
                     _mark(r["open_s"] < r["target_open_s"])))
        rows.append((f"  ping gaps within 10% of {r['ping_interval_s']:.0f} s", f"{r['gaps']:,} gaps",
                     f"{r['off']} off, worst {r['worst_offset_s'] * 1000:.0f} ms off; server at "
                     f"{r['server_cpu_fraction']:.0%} of a core", "", "all",
                     _mark(r["off"] == 0 and r["streams_with_pings"] == r["streams"])))
    elif name == "tasks":
        for provider in (k for k in r if isinstance(r[k], dict)):
            p = r[provider]
            rows.append((f"{r['count']:,} retained tasks: {provider}", "",
                         f"{p['mb']:.0f} MB (RSS, journal of {p['journal']:,} incl.)", "", "< 150 MB",
                         _mark(p["mb"] < 150)))
    elif name == "bound":
        rows.append((f"create refused at the store's bound ({r['live']:,} live tasks)", "",
                     f"median {r['median_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms", "", "< 1 ms",
                     _mark(r["p99_ms"] < r["target_ms"])))
    elif name == "million":
        rows.append((f"{r['tasks']:,} retained tasks: cloudsway", "",
                     f"{r['mb']:.0f} MB ({r['bytes_per_task']:.0f} B a task, journal of {r['journal']:,})",
                     "", "< 500 MB", _mark(r["mb"] < r["target_mb"])))
    elif name == "images":
        rows.append(("distinct 1024x1024 PNG links rendered per second", f"{r['baseline_per_second']:.0f} "
                     "(Pillow's encoder, same picture)", f"{r['per_second']:.0f}", f"{r['ratio']:.1f}x",
                     "≥ 4x", _mark(r["ratio"] >= r["target"])))
    elif name == "catalogue":
        detail = ", ".join(f"{k} {v['seconds']:.1f}" for k, v in r["providers"].items() if "seconds" in v)
        rows.append((f"scenario catalogue ({r['scenarios']} scenarios)", detail,
                     f"{r['seconds']:.1f} s", "", "< 20 s",
                     _mark(r["seconds"] < 20 and all(v.get("ok", True) for v in r["providers"].values()))))
    elif name == "startup":
        rows.append(("serve --provider all → first answer", "", f"{r['first_answer_s']:.2f} s "
                     f"(all five {r['all_answered_s']:.2f} s)", "", "< 1.5 s",
                     _mark(r["first_answer_s"] < 1.5)))
    elif name == "workers":
        bare = r["bare"]
        for key, label in (("memory_1", "1 worker, memory store"), ("redis_1", "1 worker, Redis store"),
                           ("redis_2", "2 workers, Redis store")):
            p = r[key]
            extra = f"; {p['per_mock_cpu_second']:.0f} per mock CPU-s" if "per_mock_cpu_second" in p else ""
            rows.append((f"cloudsway poll: {label}", f"bare {bare['rps']:.0f}/s",
                         f"{p['rps']:.0f}/s ({p['per_cpu_second']:.0f} per server CPU-s{extra}; "
                         f"{p['server_cores']:.2f} cores)", f"{p['rps'] / bare['rps']:.2f}", "", ""))
        pinned = (f"load on CPU {r['pin_load'] or 'any'}, servers on CPU {r['pin_servers'] or 'any'}"
                  if r.get("pin_load") or r.get("pin_servers") else "unpinned")
        rows.append((f"  2 workers vs 1 (Redis), achieved; {r.get('loadgen', '?')}, {pinned}", "",
                     f"{r['two_vs_one_rps']:.2f}x", "",
                     "≥ 1.6x", _mark(r["two_vs_one_rps"] >= 1.6)))
        rows.append(("  Redis store's cost per poll (CPU, incl. redis-server)", "",
                     f"+{r['redis_cost_us_per_poll']:.0f} µs", f"{r['redis_vs_memory_rps']:.2f}", "", ""))
    elif name == "storecost":
        rows.append(("CPU per finished-task poll in process: memory store", "", f"{r['memory_us']:.0f} µs",
                     "", "", ""))
        rows.append(("  Redis store (mock + redis-server)", f"memory {r['memory_us']:.0f} µs",
                     f"{r['redis_mock_us']:.0f} + {r['redis_server_us']:.0f} µs "
                     f"(+{r['redis_cost_us']:.0f} µs)",
                     f"{(r['redis_mock_us'] + r['redis_server_us']) / r['memory_us']:.1f}x", "", ""))
    elif name == "lifecycles":
        rows.append((f"{r['lifecycles']:,} concurrent lifecycles, 2 workers on Redis", "",
                     f"{r['seconds']:.1f} s, {r['requests']:,} requests, statuses {r['statuses']}",
                     f"{r['lifecycles_per_s']:.0f}/s", "none lost",
                     _mark(r["distinct_ids"] == r["lifecycles"] and set(r["statuses"]) == {"200"})))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per load run")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run only these measurements")
    parser.add_argument("--pin-load", metavar="CPUS", help="workers: the load generator on these CPUs "
                        "(taskset list, e.g. 0)")
    parser.add_argument("--pin-servers", metavar="CPUS", help="workers: the mock processes and "
                        "redis-server on these CPUs (e.g. 1)")
    args = parser.parse_args()
    _workers.PIN.update(load=args.pin_load, servers=args.pin_servers)
    seconds = args.seconds
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "throughput": lambda: _throughput.run(seconds),
        "polls": lambda: _suite.poll_throughput(seconds),
        "runs": lambda: _suite.runs(seconds),
        "wiremock": lambda: _wiremock.versus(seconds),
        "latency": lambda: _suite.latency_pollers(seconds),
        "proxy": lambda: _suite.proxy_latency(),
        "streams": lambda: _suite.dify_streams(),
        "tasks": lambda: _suite.retained_tasks(),
        "bound": lambda: _engine.store_bound(),
        "million": lambda: _engine.million_tasks(),
        "images": lambda: _engine.images(),
        "catalogue": lambda: _suite.scenario_catalogue(),
        "startup": lambda: _suite.startup(),
        "workers": lambda: _workers.poll_scaling(seconds),
        "storecost": lambda: _workers.store_cost(),
        "lifecycles": lambda: _workers.worker_lifecycles(),
    }
    console = Console(width=max(Console().width, 150))  # the table stays readable in a log
    machine = _machine()
    console.print(f"load generator: {_suite.loadgen_name()}")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results: dict[str, Any] = {"machine": machine, "loadgen": _suite.loadgen_name(), "started": started}
    t0 = time.perf_counter()
    for name in args.only or NAMES:
        with console.status(f"measuring {name}..."):
            t = time.perf_counter()
            results[name] = runs[name]()
            results[name]["wall_seconds"] = time.perf_counter() - t
    results["wall_seconds"] = time.perf_counter() - t0

    table = Table(title=f"imagegen-conformance benchmarks\n{machine}", title_justify="left")
    for col in ("measure", "baseline", "measured", "ratio", "target", ""):
        table.add_column(col, justify="left" if col in ("measure", "measured", "baseline") else "right")
    for name in args.only or NAMES:
        for row in _rows(name, results[name]):
            table.add_row(*row)
    console.print(table)
    console.print(f"whole run: {results['wall_seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        console.print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
