"""Run the benchmarks and print a table (and JSON with --json PATH).

    python -m benchmarks [--seconds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from rich.console import Console
from rich.table import Table

from . import _throughput


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per server")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results = {"machine": machine, "throughput": _throughput.run(args.seconds)}

    console = Console()
    table = Table(title=f"imagegen-conformance benchmarks ({machine})")
    for col in ("measure", "bare aiohttp", "mock", "ratio", "target"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    t = results["throughput"]
    assert isinstance(t, dict)
    table.add_row("create+poll req/s (achieved)", f"{t['bare']['rps']:.0f}", f"{t['mock']['rps']:.0f}",
                  f"{t['ratio_rps']:.2f}", "")
    table.add_row("req per server CPU-second", f"{t['bare']['per_cpu_second']:.0f}",
                  f"{t['mock']['per_cpu_second']:.0f}", f"{t['ratio_capacity']:.2f}", "≥ 0.60")
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
