"""Running the client under test: a command in any language, or a Python callable.

A client is told where to go by environment variables and answers with
``{"images": [...]}`` (each a URL, a file path, or ``{"url": ..., "path": ...}``); a command
prints it on stdout and exits non-zero on failure, a callable returns it or raises.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import inspect
import io
import json
import os
import re
import shlex
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx

from ..rules import ClientResult, ImageResult

__all__ = [
    "CallableClient",
    "Client",
    "CommandClient",
    "inspect_images",
    "load_client",
]

_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
OUTPUT_LIMIT = 20_000


class Client(Protocol):
    """Anything the runner can start with an environment and stop after ``timeout`` seconds."""

    name: str

    async def run(self, env: Mapping[str, str], timeout: float) -> ClientResult: ...


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text[:OUTPUT_LIMIT]


def _parse_output(stdout: str) -> Any:
    """The client's JSON: the whole of stdout, or else its last JSON line."""
    text = stdout.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


class CommandClient:
    """A client that is a command line, run with the harness's variables added to the environment."""

    def __init__(self, command: str | list[str], *, cwd: str | None = None, name: str | None = None) -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        self.command = command if isinstance(command, str) else shlex.join(self.argv)
        self.name = name or self.command
        self.cwd = cwd
        if not self.argv:
            raise ValueError("the client command is empty")

    async def run(self, env: Mapping[str, str], timeout: float, *, watch: Path | None = None) -> ClientResult:
        """Run the command, stopping it after ``timeout`` real seconds.

        ``watch``: the libfaketime library the client was started under. While it runs the
        harness checks that the library is really loaded and that no thread is stuck in a
        timed wait libfaketime cannot scale (the client is stopped at once then, rather than
        hang): either sets :attr:`ClientResult.clock_problem`.
        """
        full_env = {**os.environ, **env}
        secrets = [env.get("IMAGEGEN_API_KEY", "")]
        started = time.time()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, env=full_env, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return ClientResult(False, error=f"cannot start {self.argv[0]!r}: {exc}",
                                started_at=started, ended_at=time.time())
        timed_out = False
        problem: list[str] = []
        communicate = asyncio.ensure_future(proc.communicate())
        watcher = asyncio.ensure_future(_watch(proc.pid, watch, problem)) if watch else None
        waiting = {communicate} if watcher is None else {communicate, watcher}
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stuck = watcher is not None and watcher in done and communicate not in done and bool(problem)
        if communicate not in done:
            timed_out = True  # (a stuck thread wait: the frame's failure; clock_problem says so)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        out, err = await communicate
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await watcher
        ended = time.time()
        stdout = _redact(out.decode("utf-8", errors="replace"), secrets)
        stderr = _redact(err.decode("utf-8", errors="replace"), secrets)
        output = _parse_output(stdout)
        ok = proc.returncode == 0 and not timed_out
        error = None
        if stuck:
            ok = False
            error = f"the harness stopped the client: {problem[0]}"
        elif timed_out:
            error = f"the client was still running after {timeout:.1f} s and was stopped"
        elif not ok:
            error = _error_text(output) or (stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return ClientResult(ok, proc.returncode, timed_out, output, error, stdout, stderr,
                            started, ended, clock_problem=problem[0] if problem else None)


async def _watch(pid: int, library: Path, problem: list[str]) -> None:
    """Check the client's clock while it runs; return (ending the wait) on a problem."""
    from ._frame import loaded_in, stuck_thread_wait

    loaded = False
    absent = 0
    while True:
        await asyncio.sleep(0.05)
        if not loaded:
            state = loaded_in(pid, library)
            loaded = bool(state)
            absent += state is False
            if absent >= 3:  # checked after the loader had every chance to map it
                problem.append(f"{library.name} was not loaded into the client (LD_PRELOAD "
                               "ignored or cleared, or a setuid program)")
                # Not stuck: let it run on; its timing just cannot be judged.
                loaded = True
                continue
        stuck = stuck_thread_wait(pid)
        if stuck is not None:
            problem.append(stuck)
            return


def _error_text(output: Any) -> str | None:
    if isinstance(output, dict) and output.get("error"):
        err = output["error"]
        return str(err.get("message", err)) if isinstance(err, dict) else str(err)
    return None


class CallableClient:
    """A Python callable ``module:function`` taking the environment mapping.

    Sync functions run on a daemon thread (the mock runs on this event loop); coroutine
    functions are awaited and cancelled at the timeout.
    """

    def __init__(self, spec: str | Callable[[Mapping[str, str]], Any]) -> None:
        if isinstance(spec, str):
            module_name, _, attr = spec.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise ValueError(f"cannot import client module {module_name!r}: {exc}") from exc
            func = getattr(module, attr, None)
            if not callable(func):
                raise ValueError(f"{module_name} has no callable {attr!r}")
            self.func: Callable[[Mapping[str, str]], Any] = func
            self.name = spec
            self.spec: str | None = spec  # importable by name: it can run in a child process
        else:
            self.func = spec
            self.name = f"{spec.__module__}:{spec.__qualname__}"
            self.spec = None
        #: it divides its waits by IMAGEGEN_TIME_SCALE itself (clients._common.honours_time_scale)
        self.honours_time_scale = bool(getattr(self.func, "imagegen_honours_time_scale", False))

    async def run(self, env: Mapping[str, str], timeout: float) -> ClientResult:
        secrets = [env.get("IMAGEGEN_API_KEY", "")]
        started = time.time()
        try:
            if inspect.iscoroutinefunction(self.func):
                output = await asyncio.wait_for(self.func(dict(env)), timeout)
            else:
                output = await asyncio.wait_for(_on_thread(self.func, dict(env)), timeout)
        except TimeoutError:
            return ClientResult(False, timed_out=True, started_at=started, ended_at=time.time(),
                                error=f"the client was still running after {timeout:.1f} s")
        except Exception as exc:
            output = getattr(exc, "to_dict", lambda: None)()
            return ClientResult(False, output=output, started_at=started, ended_at=time.time(),
                                error=_redact(f"{type(exc).__name__}: {exc}", secrets))
        ok = isinstance(output, dict) and not output.get("error")
        return ClientResult(ok, output=output, started_at=started, ended_at=time.time(),
                            error=None if ok else _error_text(output) or "no images returned")


def _on_thread(func: Callable[[Mapping[str, str]], Any], env: Mapping[str, str]) -> asyncio.Future[Any]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result = func(env)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(settle, None, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name="imagegen-client", daemon=True).start()
    return future


def load_client(spec: str) -> Client:
    """``module:function`` is a Python callable; anything else is a command line."""
    if _CALLABLE.match(spec.strip()):
        return CallableClient(spec.strip())
    return CommandClient(spec)


async def inspect_images(result: ClientResult, http: httpx.AsyncClient) -> list[ImageResult]:
    """Measure each image the client delivered: from its file, or else by downloading its URL."""
    from PIL import Image

    out: list[ImageResult] = []
    for item in result.raw_images:
        url = item.get("url") if isinstance(item, dict) else None
        path = item.get("path") if isinstance(item, dict) else None
        if isinstance(item, str):
            url, path = (item, None) if "://" in item or item.startswith("data:") else (None, item)
        image = ImageResult(url if isinstance(url, str) else None, path if isinstance(path, str) else None)
        try:
            if image.path and Path(image.path).is_file():
                data = Path(image.path).read_bytes()
            elif image.url and image.url.startswith("data:"):  # inline (fal sync_mode)
                data = base64.b64decode(image.url.partition(",")[2])
            elif image.url:
                response = await http.get(image.url)
                if response.status_code != 200:
                    raise ValueError(f"GET {image.url} answered HTTP {response.status_code}")
                data = response.content
            else:
                raise ValueError(f"neither a readable path nor a URL: {item!r}")
            with Image.open(io.BytesIO(data)) as img:
                image.width, image.height = img.size
                image.format = (img.format or "").lower()
                thumb = img.convert("RGB")
                thumb.thumbnail((160, 160))
                buf = io.BytesIO()
                thumb.save(buf, "PNG")
                image.thumbnail = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        except Exception as exc:
            image.error = f"{type(exc).__name__}: {exc}"
        out.append(image)
    return out
