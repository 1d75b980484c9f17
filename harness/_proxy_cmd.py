"""``imagegen-conformance proxy``: a validating proxy that runs until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from rich.console import Console
from rich.text import Text

from mocks.engine import Exchange, redact_url

from ._deviation import Deviation
from ._proxy import ValidatingProxy

__all__ = ["run_proxy"]


async def run_proxy(
    provider: str, target: str, *, host: str = "127.0.0.1", port: int = 0,
    time_scale: float = 1.0, record: Path | None = None, console: Console | None = None,
) -> None:
    """Serve the proxy, print each exchange and deviation (redacted), record them if asked."""
    out = console or Console()
    sink = record.open("a", encoding="utf-8") if record else None

    def on_exchange(ex: Exchange) -> None:
        query = "?" + "&".join(f"{k}={v}" for k, v in ex.query) if ex.query else ""
        out.print(f"#{ex.seq} {ex.method} {redact_url(ex.path + query)} -> "
                  f"{ex.status if ex.status is not None else 'no answer'} "
                  f"({ex.operation or '?'}, {ex.duration_ms or 0:.0f} ms)", highlight=False, markup=False)
        if sink:
            sink.write(json.dumps({"exchange": ex.to_dict()}) + "\n")
            sink.flush()

    def on_deviation(dev: Deviation) -> None:
        out.print(Text(f"  {dev}", "red" if dev.severity >= 30 else "yellow"))
        if sink:
            sink.write(json.dumps({"deviation": dev.to_dict()}) + "\n")
            sink.flush()

    proxy = ValidatingProxy(provider, target, time_scale=time_scale, on_exchange=on_exchange,
                            on_deviation=on_deviation)
    url = await proxy.start(host, port)
    out.print(f"{provider} proxy {url} -> {target}", highlight=False, markup=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await proxy.close()
        if sink:
            sink.close()
