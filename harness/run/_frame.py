"""One time frame for the client and the mock: the client's clocks run in provider time.

A command client runs under libfaketime (the library the PyPI package ``libfaketime`` ships, or
Debian's ``faketime``): every clock it reads through libc (``time``, ``gettimeofday``,
``clock_gettime`` realtime and monotonic), every sleep, poll/select/epoll timeout and timer runs
``scale`` times faster and starts at the mock's provider "now". The harness sets up what the
``faketime`` launcher sets up, shared state (a POSIX semaphore and shared memory named in
``FAKETIME_SHARED``) holding the frame's start, so every process of the client's tree (a bash
script and each ``curl`` it starts) reads the same clock, whenever it was started.

Where the frame cannot be applied (a static binary, a Go program, which reads the clock through
the vDSO and not libc; no libfaketime on this platform) or cannot be trusted (the library was
never loaded; a thread wait libfaketime 0.9.10 does not scale), :class:`Frame` says so and why,
and timing checks are reported "not judged", never as the client's deviation.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import hashlib
import itertools
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal

__all__ = [
    "FRAMES",
    "NOT_VIRTUALIZED",
    "FrameSession",
    "frame_blocker",
    "libfaketime_path",
    "loaded_in",
    "stuck_thread_wait",
]

#: ``virtual``: the client runs in provider time (libfaketime); ``told``: it runs in real time
#: and is told the scale in ``IMAGEGEN_TIME_SCALE`` (it must divide its waits by it).
FRAMES = ("virtual", "told")

NOT_VIRTUALIZED = "the client's clock is not virtualized"


# --- where libfaketime is ----------------------------------------------------------------


def libfaketime_path() -> Path | None:
    """The libfaketime library to preload, or None where there is none.

    ``$IMAGEGEN_LIBFAKETIME`` if set; else the library built once from the source the PyPI
    package ``libfaketime`` ships (its own prebuilt copy only fakes reading the clock, not
    sleeps and timeouts), cached under ``~/.cache/imagegen-conformance``; else Debian's
    ``faketime`` package's.
    """
    override = os.environ.get("IMAGEGEN_LIBFAKETIME")
    if override:
        return Path(override) if Path(override).is_file() else None
    if not sys.platform.startswith("linux"):
        return None
    global _built
    if _built is None:
        _built = _build_from_package() or False
    if _built:
        return _built
    debian = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return Path(debian[0]) if debian else None


_built: Path | Literal[False] | None = None


def _build_from_package() -> Path | None:
    try:
        import libfaketime  # the PyPI package: it ships libfaketime's C source and Makefile
    except ImportError:
        return None
    source = Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src"
    if not (source / "libfaketime.c").is_file():
        return None
    digest = hashlib.sha256((source / "libfaketime.c").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagegen-conformance"
    target = cache / f"libfaketime-{digest}" / "libfaketime.so.1"
    if target.is_file():
        return target
    make = shutil.which("make")
    if make is None or shutil.which(os.environ.get("CC", "cc")) is None:
        return None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            build = Path(tmp) / "src"
            shutil.copytree(source, build)
            (build / "libfaketime.so.1").unlink(missing_ok=True)
            done = subprocess.run([make, "-s", "libfaketime.so.1"], cwd=build, capture_output=True,
                                  timeout=120, check=False)
            if done.returncode != 0 or not (build / "libfaketime.so.1").is_file():
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(build / "libfaketime.so.1", target)  # atomic: a parallel build may race
    except (OSError, subprocess.SubprocessError):
        return None
    return target


# --- can the frame reach this program? ---------------------------------------------------


def _resolve(program: str, env: Mapping[str, str] | None = None) -> str | None:
    path = shutil.which(program, path=(env or os.environ).get("PATH"))
    if path is None and os.path.isfile(program):
        path = program
    return os.path.realpath(path) if path else None


def _interpreter(path: str) -> list[str] | None:
    """A script's ``#!`` line as argv (``env X`` resolved to X), or None for a non-script."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if line and os.path.basename(line[0]) == "env":
        line = [a for a in line[1:] if not a.startswith("-")]
    return line or None


def _elf_facts(path: str) -> tuple[bool, bool] | None:
    """(dynamically linked, a Go program) for an ELF file; None when it is not ELF."""
    try:
        with open(path, "rb") as f:
            data = f.read(4 * 1024 * 1024)
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return None
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    if wide:
        phoff, = struct.unpack_from(order + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(order + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x2A)
    dynamic = False
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 4 > len(data):
            break
        p_type, = struct.unpack_from(order + "I", data, at)
        if p_type == 3:  # PT_INTERP: the dynamic loader, which honours LD_PRELOAD
            dynamic = True
    go = b"\xff Go buildinf:" in data or b"Go build ID:" in data
    return dynamic, go


def frame_blocker(argv: list[str], env: Mapping[str, str] | None = None) -> str | None:
    """Why libfaketime cannot reach ``argv``'s program (None: it can, as far as can be told)."""
    seen = 0
    program = argv[0] if argv else ""
    while seen < 4:
        seen += 1
        path = _resolve(program, env)
        if path is None:
            return None  # it will fail to start; that is reported as such
        interp = _interpreter(path)
        if interp is not None:
            program = interp[0]
            continue
        facts = _elf_facts(path)
        if facts is None:
            return None
        dynamic, go = facts
        if go:
            return (f"{path} is a Go program: it reads the clock through the vDSO, not libc, "
                    "so libfaketime cannot move it")
        if not dynamic:
            return f"{path} is statically linked (no PT_INTERP): LD_PRELOAD cannot reach it"
        return None
    return None


# --- the shared state the faketime launcher would create ---------------------------------

_counter = itertools.count()


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name, use_errno=True)
        lib.sem_open.restype = ctypes.c_void_p
        lib.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
        lib.sem_close.argtypes = [ctypes.c_void_p]
        lib.sem_unlink.argtypes = [ctypes.c_char_p]
    except (OSError, AttributeError):
        return None
    return lib


def _timespec(clock: int) -> tuple[int, int]:
    ns = time.clock_gettime_ns(clock)
    return ns // 1_000_000_000, ns % 1_000_000_000


class FrameSession:
    """libfaketime's environment for one client run, and the shared state behind it.

    ``with FrameSession(lib, scale, provider_now) as env:`` gives the variables to add to the
    client's environment (``provider_now``: the mock's time, or its clock's ``now``); the
    semaphore and shared memory are removed on exit.
    """

    def __init__(self, library: Path, scale: float, provider_now: float | Callable[[], float]) -> None:
        self.library = library
        self.scale = scale
        self.provider_now = provider_now
        tag = f"{os.getpid()}_{next(_counter)}"
        self.sem_name = f"/imagegen_ft_sem_{tag}"
        self.shm_name = f"/imagegen_ft_shm_{tag}"
        self._sem: int | None = None
        self._libc = _libc()

    def __enter__(self) -> dict[str, str]:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> dict[str, str]:
        # Read every clock at one instant: the frame starts there, at the mock's provider now
        # (read from the mock's clock at that instant when it is given as a callable: a figure
        # read earlier would leave the client behind by the delay times the scale).
        real = _timespec(time.CLOCK_REALTIME)
        now = self.provider_now() if callable(self.provider_now) else self.provider_now
        offset = now - (real[0] + real[1] / 1e9)
        env = {
            "LD_PRELOAD": str(self.library),
            # "+offset xN": provider time = start + offset + (now - start) * N, on every clock.
            "FAKETIME": f"{offset:+.6f} x{self.scale:g}",
            # The spec never changes during a run: libfaketime may cache it.
            "FAKETIME_DONT_FAKE_MONOTONIC": "0",
            "DONT_FAKE_MONOTONIC": "0",
            # File timestamps stay real: faking every stat() only slows start-up (imports).
            "NO_FAKE_STAT": "1",
        }
        shared = self._create_shared(real)
        if shared:
            env["FAKETIME_SHARED"] = shared
        return env

    def _create_shared(self, real: tuple[int, int]) -> str | None:
        """A semaphore and shared memory with the frame's start, as ``faketime`` creates them.

        Every libfaketime process that finds ``FAKETIME_SHARED`` takes its start time from
        there (instead of its own start), so a child started later reads the same clock.
        """
        lib = self._libc
        if lib is None or not os.path.isdir("/dev/shm"):
            return None
        sem = lib.sem_open(self.sem_name.encode(), os.O_CREAT | os.O_EXCL, 0o600, 1)
        if not sem:
            return None
        self._sem = sem
        clocks = [real, _timespec(time.CLOCK_MONOTONIC), _timespec(time.CLOCK_MONOTONIC_RAW),
                  _timespec(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))]
        # struct ft_shared_s: uint64 ticks, uint64 file_idx, then the start time of each clock
        # (real, monotonic, monotonic raw, boot) as struct timespec.
        payload = struct.pack("=QQ" + "qq" * len(clocks), 0, 0, *(v for c in clocks for v in c))
        path = "/dev/shm/" + self.shm_name.lstrip("/")  # shm_open's own place on Linux
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except OSError:
            return None
        try:
            os.ftruncate(fd, mmap.PAGESIZE)
            os.write(fd, payload)
        finally:
            os.close(fd)
        return f"{self.sem_name} {self.shm_name}"

    def close(self) -> None:
        if self._libc is not None and self._sem is not None:
            self._libc.sem_close(self._sem)
            self._libc.sem_unlink(self.sem_name.encode())
            self._sem = None
        with contextlib.suppress(OSError):
            os.unlink("/dev/shm/" + self.shm_name.lstrip("/"))


def loaded_in(pid: int, library: Path) -> bool | None:
    """Whether ``pid`` has ``library`` mapped (None: cannot tell, e.g. it has exited)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return library.name in maps


_FUTEX = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine)


def stuck_thread_wait(pid: int) -> str | None:
    """A thread of ``pid`` blocked in a timed futex wait whose deadline is absurdly far away.

    libfaketime 0.9.10 fakes CLOCK_MONOTONIC but passes ``sem_clockwait`` through untouched,
    so a thread wait with a timeout (Python's ``threading.Event().wait(5)``, a lock acquired
    with a timeout) asks the kernel for a deadline in provider time: it would hang for years.
    """
    if _FUTEX is None:
        return None
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    for tid in tasks:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()
        except OSError:
            continue
        if len(fields) < 6 or fields[0] != str(_FUTEX):
            continue
        op, timeout_ptr = int(fields[2], 16), int(fields[4], 16)
        if op & 0x7F != 9 or not timeout_ptr:  # FUTEX_WAIT_BITSET with an absolute deadline
            continue
        try:
            with open(f"/proc/{pid}/mem", "rb") as mem:
                mem.seek(timeout_ptr)
                sec, _ = struct.unpack("=qq", mem.read(16))
        except (OSError, ValueError, struct.error):
            continue
        clock_realtime = bool(op & 256)
        base = time.time() if clock_realtime else now
        if sec - base > 86_400 * 30:
            return (f"thread {tid} waits on a timed lock or condition until {sec - base:.0f} s "
                    "from now: libfaketime 0.9.10 does not scale sem_clockwait (Python's "
                    "threading waits with a timeout)")
    return None


@contextlib.contextmanager
def frame_env(library: Path | None, scale: float, provider_now: float) -> Iterator[dict[str, str]]:
    """The libfaketime variables for one run ({} without a library)."""
    if library is None:
        yield {}
        return
    with FrameSession(library, scale, provider_now) as env:
        yield env
