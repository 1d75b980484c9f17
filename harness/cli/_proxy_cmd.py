"""``imagegen-conformance proxy``: a validating proxy that runs until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from rich.console import Console
from rich.text import Text

from imagegen_conformance.mocks.engine import Exchange, redact_url

from ..proxy._proxy import ValidatingProxy
from ..proxy._record import Recorder
from ..rules._deviation import Deviation

__all__ = ["run_proxy"]


async def run_proxy(
    provider: str, target: str, *, host: str = "127.0.0.1", port: int = 0,
    time_scale: float = 1.0, recorder: Recorder | None = None, console: Console | None = None,
) -> None:
    """Serve the proxy, print each exchange and deviation (redacted), record them if asked."""
    out = console or Console()

    def on_exchange(ex: Exchange) -> None:
        query = "?" + "&".join(f"{k}={v}" for k, v in ex.query) if ex.query else ""
        out.print(f"#{ex.seq} {ex.method} {redact_url(ex.path + query)} -> "
                  f"{ex.status if ex.status is not None else 'no answer'} "
                  f"({ex.operation or '?'}, {ex.duration_ms or 0:.0f} ms)", highlight=False, markup=False)
        if recorder is not None:
            recorder.on_exchange(ex)

    def on_deviation(dev: Deviation) -> None:
        out.print(Text(f"  {dev}", "red" if dev.severity >= 30 else "yellow"))
        if recorder is not None:
            recorder.on_deviation(dev)

    # A recording follows the session through returned links (fal's status_url), so they are
    # rewritten to lead back through the proxy.
    proxy = ValidatingProxy(
        provider, target, time_scale=time_scale, on_exchange=on_exchange, on_deviation=on_deviation,
        on_raw=recorder.on_raw if recorder is not None else None,
        rewrite_links=recorder is not None, live_rules=True,
    )
    url = await proxy.start(host, port)
    assert proxy.live is not None
    proxy.live.base_url = url
    note = f" (recording to {recorder.path}, {recorder.format})" if recorder is not None else ""
    out.print(f"{provider} proxy {url} -> {target}{note}", highlight=False, markup=False)
    if recorder is not None:
        recorder.started(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await proxy.close()
        if recorder is not None:
            recorder.close()
