"""``serve --workers N``: N processes serving the same ports, one mock through a shared store.

The parent reserves each listening port (a socket bound with SO_REUSEPORT and never listened
on, so a port 0 is the same for every worker), forks the workers, prints the listeners once
every worker accepts connections, and on SIGINT/SIGTERM stops them all (SIGTERM, then SIGKILL
after the grace period). Each worker is a full mock whose state is in Redis
(``mocks.engine._shared``); the kernel spreads connections between them. With
``--worker-ports`` each worker also listens on a port of its own, so a test can choose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imagegen_conformance import contracts
from imagegen_conformance.mocks import TLSMaterial, start
from imagegen_conformance.mocks.engine import share

if TYPE_CHECKING:
    from ._serve_cmd import ServeConfig

__all__ = ["run_workers"]

GRACE = 10.0  # seconds a worker gets to finish its requests after SIGTERM


def _reserve(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"port {port} on {host} is in use; pass --port 0 for a free port "
                                 "or --port N for another") from None
    return sock


def run_workers(config: ServeConfig, emit: Callable[..., Any]) -> None:
    """Serve ``config`` from ``config.workers`` processes until SIGINT/SIGTERM (blocking)."""
    from ._serve_cmd import build_servers

    probe = build_servers(config)  # only to learn each provider's hosts (roles)
    alone = [s.provider_id for s in probe if not s.provider.shareable]
    if alone:
        raise ValueError(
            f"{', '.join(alone)} cannot be shared by several workers (its state lives in one "
            "process); serve it without --workers"
        )
    reserved: list[socket.socket] = []
    role_ports: dict[tuple[str, str], int] = {}
    try:
        for server in probe:
            for index, role in enumerate(server.roles):
                if index == 0:
                    port = config.port if config.port is not None else contracts.load(
                        server.provider_id).behaviour.port
                else:
                    port = 0
                sock = _reserve(config.host, port)
                reserved.append(sock)
                role_ports[(server.provider_id, role)] = sock.getsockname()[1]
        tls = TLSMaterial.create(config.tls_dir) if config.tls else None
        _supervise(config, emit, role_ports, tls)
    finally:
        for sock in reserved:
            sock.close()


def _supervise(config: ServeConfig, emit: Callable[..., Any], role_ports: dict[tuple[str, str], int],
               tls: TLSMaterial | None) -> None:
    read_fd, write_fd = os.pipe()
    pids: dict[int, int] = {}  # pid -> worker number
    sys.stdout.flush()
    sys.stderr.flush()
    for number in range(1, config.workers + 1):
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 0
            try:
                asyncio.run(_worker(config, number, role_ports, tls, write_fd, emit))
            except BaseException as exc:  # report to the parent; it prints one line
                _send(write_fd, {"error": f"worker {number}: {exc}",
                                 "trace": traceback.format_exc()})
                code = 1
            os._exit(code)
        pids[pid] = number
    os.close(write_fd)
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        reports = _wait_ready(read_fd, pids, stop)
        if reports is not None:
            _announce(reports, emit, tls)
            failure = _watch(pids, stop)
        else:
            failure = None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(pids)
        os.close(read_fd)
    if failure:
        raise RuntimeError(failure)


def _send(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def _wait_ready(fd: int, pids: dict[int, int], stop: dict[str, int]) -> list[dict[str, Any]] | None:
    """Each worker's listeners once all accept connections; raises a worker's start-up error."""
    buffer = b""
    reports: list[dict[str, Any]] = []
    while len(reports) < len(pids):
        if stop["signal"]:
            return None
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            raise RuntimeError("a worker exited before it was ready")
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            message = json.loads(line)
            if "error" in message:
                raise RuntimeError(message["error"])
            reports.append(message)
    return sorted(reports, key=lambda r: r["worker"])


def _announce(reports: list[dict[str, Any]], emit: Callable[..., Any], tls: TLSMaterial | None) -> None:
    if tls is not None:
        emit("ca_bundle", path=str(tls.ca_path))
    for item in reports[0]["shared"]:
        emit("listener", **item)
    for report in reports:
        for item in report["own"]:
            emit("worker", worker=report["worker"], **item)


def _watch(pids: dict[int, int], stop: dict[str, int]) -> str | None:
    """Wait for a signal; a worker that dies first stops the others (and says which)."""
    while not stop["signal"]:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return "every worker exited"
        if pid:
            number = pids.pop(pid)
            how = (f"signal {-os.waitstatus_to_exitcode(status)}" if os.WIFSIGNALED(status)
                   else f"code {os.waitstatus_to_exitcode(status)}")
            return f"worker {number} exited ({how}); stopping the others"
        time.sleep(0.05)
    return None


def _stop_all(pids: dict[int, int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while pids and time.monotonic() < deadline:
        for pid in list(pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pids.pop(pid)
        time.sleep(0.02)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    pids.clear()


async def _worker(config: ServeConfig, number: int, role_ports: dict[tuple[str, str], int],
                  tls: TLSMaterial | None, fd: int, emit: Callable[..., Any]) -> None:
    from ._serve_cmd import _watch, build_servers

    servers = build_servers(config)
    for server in servers:
        shared = await share(server, config.store, secret_given=config.signing_secret is not None)
        shared.worker = number
        _watch(server, config, emit)  # --verbose: each worker prints the exchanges it answers
    served = await start(servers, host=config.host, role_ports=role_ports, tls=tls, reuse_port=True)
    own = None
    if config.worker_ports:
        own = await start(servers, host=config.host, ports={s.provider_id: 0 for s in servers}, tls=tls)
        own.servers = []  # the shared Served closes the servers
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        def items(which: Any) -> list[dict[str, Any]]:
            return [{"provider": i.provider, "role": i.role, "url": i.url, "primary": i.primary}
                    for i in which.listeners]

        _send(fd, {"worker": number, "shared": items(served), "own": items(own) if own else []})
        os.close(fd)
        await stop.wait()
    finally:
        if own is not None:
            await own.close()
        await served.close()
