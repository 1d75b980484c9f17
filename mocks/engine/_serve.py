"""Run one or more MockServers on real sockets: ports, TLS, clean shutdown."""

from __future__ import annotations

import asyncio
import errno
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ._aiohttp import make_handler
from ._connections import ConnectionLimits, server_options
from ._server import MockServer

__all__ = ["Listener", "PortInUse", "Served", "TLSMaterial", "bind", "start"]

#: Connections the kernel may queue before the server accepts them.
LISTEN_BACKLOG = 8192


class PortInUse(OSError):
    pass


@dataclass
class TLSMaterial:
    """A throwaway CA and a certificate for 127.0.0.1/localhost, made with trustme."""

    ca_path: Path
    context: ssl.SSLContext

    @classmethod
    def create(cls, directory: Path | None = None, hosts: tuple[str, ...] = ()) -> TLSMaterial:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1", *hosts)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        folder = directory or Path(tempfile.mkdtemp(prefix="imagegen-tls-"))
        folder.mkdir(parents=True, exist_ok=True)
        ca_path = folder / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        return cls(ca_path, context)


@dataclass
class Listener:
    provider: str
    role: str
    url: str
    primary: bool


@dataclass
class Served:
    """Servers that are accepting connections; ``await served.close()`` stops them."""

    servers: list[MockServer]
    listeners: list[Listener]
    runners: list[web.BaseRunner] = field(default_factory=list)
    tls: TLSMaterial | None = None

    def url(self, provider: str, role: str | None = None) -> str:
        names = {provider} | {s.name for s in self.servers if s.provider_id == provider}
        for item in self.listeners:
            if item.provider in names and (item.role == role or (role is None and item.primary)):
                return item.url
        raise KeyError(f"{provider} {role or ''} is not served")

    async def close(self) -> None:
        for server in self.servers:
            await server.aclose()
        # Concurrently: each runner gives its requests in flight the same grace period, so
        # shutting six listeners down takes one shutdown_timeout, not six.
        await asyncio.gather(*(runner.cleanup() for runner in self.runners))
        self.runners.clear()


async def bind(
    runner: web.BaseRunner, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
    what: str = "",
    reuse_port: bool = False,
) -> str:
    """Set ``runner`` up on ``host:port`` (0: a free port) and return its base URL.

    A port in use is a :class:`PortInUse` that says which port and which flag changes it.
    """
    await runner.setup()
    # A listen backlog of thousands: aiohttp's default of 128 overflows when thousands of clients
    # (a fleet of pollers, 10,000 SSE streams) connect at once, and each overflow costs a client
    # a SYN retry of a second or more. The kernel caps it at net.core.somaxconn.
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=LISTEN_BACKLOG,
                       reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            for_what = f" (for {what})" if what else ""
            raise PortInUse(
                exc.errno,
                f"port {port} on {host} is in use{for_what}; "
                f"pass --port 0 for a free port or --port N for another",
            ) from exc
        raise
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if ssl_context else 'http'}://{shown}:{bound}"


async def start(
    servers: list[MockServer],
    *,
    host: str = "127.0.0.1",
    ports: dict[str, int] | None = None,
    tls: TLSMaterial | None = None,
    shutdown_timeout: float = 5.0,
    limits: ConnectionLimits | None = None,
    role_ports: dict[tuple[str, str], int] | None = None,
    reuse_port: bool = False,
) -> Served:
    """Bind every server's hosts. ``ports`` maps a provider id to its primary port (0: free port).

    ``limits``: read timeouts and the idle bound of every connection (:class:`ConnectionLimits`).
    ``role_ports`` names the port of any (provider, role); ``reuse_port`` lets several worker
    processes listen on the same ports (SO_REUSEPORT: the kernel spreads connections).
    """
    served = Served(servers, [], tls=tls)
    try:
        for server in servers:
            for index, role in enumerate(server.roles):
                # Keyed by the name it was asked for (an alias) or by its provider id.
                wanted = ports or {}
                port = wanted.get(server.name, wanted.get(server.provider_id, 0)) if index == 0 else 0
                port = (role_ports or {}).get((server.provider_id, role), port)
                # handler_cancellation: a client that drops its connection mid-stream cancels
                # the stream at once (a waiting stream would otherwise live until its next write,
                # forever on a manual clock).
                # aiohttp waits shutdown_timeout twice for a busy handler (before and after
                # cancelling its request): half each gives requests in flight shutdown_timeout.
                # aiohttp's low-level server: the mock routes every path itself, so the
                # application router and middleware chain would only cost time per request.
                # server_options: idle and header timeouts, and a log that never repeats a
                # request's bytes (aiohttp's own quotes an unparseable header, key and all).
                runner = web.ServerRunner(
                    web.Server(make_handler(server, role, limits), handler_cancellation=True,
                               **server_options(f"{server.provider_id} {role}", limits,
                                                server.errors)),
                    shutdown_timeout=shutdown_timeout / 2,
                )
                url = await bind(runner, host, port, ssl_context=tls.context if tls else None,
                                 what=server.provider_id, reuse_port=reuse_port)
                served.runners.append(runner)
                served.listeners.append(Listener(server.name, role, url, index == 0))
    except BaseException:
        await served.close()
        raise
    return served
