"""Exit codes as documented: 0 clean, 1 deviations, 2 every usage error, 3 unreachable (verify)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from imagegen_conformance.harness.cli import main


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(("args", "says"), [
    pytest.param(["--fault", "http503"], "Did you mean 'http'?", id="unknown-fault"),
    pytest.param(["--fault", "http:503;times=x"], "times", id="bad-fault-argument"),
    pytest.param(["--option", "nope=1"], "no served provider has option(s) nope", id="unknown-option"),
    pytest.param(["--option", "cloudsway.error_shape=xml"], "valid values are nested, openai",
                 id="bad-option-value"),
    pytest.param(["--rate-limit", "lots"], "rate", id="bad-rate-limit"),
    pytest.param(["--provider", "nope"], "nope", id="unknown-provider"),
])
def test_serve_usage_errors_exit_2(args: list[str], says: str) -> None:
    code, out = invoke("serve", "-p", "cloudsway", "--port", "0", *args) if "--provider" not in args \
        else invoke("serve", "--port", "0", *args)
    assert code == 2, out
    assert says in out


def test_serve_port_in_use_exits_2_and_names_the_flag(taken_port: int) -> None:
    code, out = invoke("serve", "-p", "cloudsway", "--port", str(taken_port))
    assert code == 2
    assert f"port {taken_port} on 127.0.0.1 is in use" in out and "--port 0" in out


def test_proxy_port_in_use_exits_2(taken_port: int) -> None:
    code, out = invoke("proxy", "-p", "cloudsway", "--target", "http://127.0.0.1:9",
                       "--port", str(taken_port))
    assert code == 2 and f"port {taken_port}" in out


def test_serve_stops_cleanly_with_0(serve_cli: Callable[..., Any]) -> None:
    proc = serve_cli("-p", "cloudsway", "--port", "0")
    assert proc.readline().startswith("cloudsway http://127.0.0.1:")
    assert proc.stop() == 0


def test_run_terminal_report_to_a_file_is_the_terminal_report(tmp_path: Path) -> None:
    out = tmp_path / "report.txt"
    code, printed = invoke("run", "-p", "cloudsway", "-s", "happy-path", "--report", "terminal",
                           "--out", str(out))
    assert code == 0, printed
    text = out.read_text()
    assert "happy-path" in text and "passed" in text and "no deviations" in text
    assert not text.lstrip().startswith("{") and "\x1b[" not in text  # not JSON, no colour codes
    assert f"terminal report written to {out}" in printed
