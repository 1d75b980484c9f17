"""One time frame for the client and the mock: clients judged in provider time, and its limits."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from junitparser import JUnitXml

from imagegen_conformance import contracts
from imagegen_conformance.harness import CommandClient, render_html, render_junit, run_scenario
from imagegen_conformance.harness.cli import main
from imagegen_conformance.harness.report import Report
from imagegen_conformance.harness.run._frame import frame_blocker, libfaketime_path
from imagegen_conformance.harness.run._runner import scenario_scale

CLIENT = Path(__file__).with_name("clients") / "realtime_cloudsway.py"
CLOUDSWAY = contracts.load("cloudsway")

needs_faketime = pytest.mark.skipif(libfaketime_path() is None, reason="no libfaketime on this machine")


def realtime(*flags: str) -> CommandClient:
    return CommandClient([sys.executable, str(CLIENT), *flags])


async def run(client: CommandClient, scenario: str = "happy-path", **kw: object):  # type: ignore[no-untyped-def]
    return await run_scenario(CLOUDSWAY, CLOUDSWAY.scenario(scenario), client, **kw)  # type: ignore[arg-type]


# --- the frame ---------------------------------------------------------------------------


@needs_faketime
async def test_a_real_second_sleep_is_a_provider_second_and_the_client_reads_provider_time() -> None:
    result = await run(realtime("--pause", "1", "--report-clock"))
    assert result.frame is not None and result.frame.kind == "faketime" and result.frame.virtualized
    assert [d.rule for d in result.deviations] == []
    polls = [e for e in result.exchanges if e.operation == "getImageTask"]
    gaps = [b.provider_time - a.provider_time for a, b in itertools.pairwise(polls)]
    assert gaps and all(g >= 0.98 for g in gaps)
    # The client's own time.time() at each request is the mock's provider time of that request:
    # never after it (the client reads its clock, then sends), and behind it by the client's
    # own overhead times the scale. A stall of a loaded machine only widens one request's lag,
    # so the typical (median) lag is judged; a client in real time would fall behind by the
    # frame's lead, seconds by the middle of the run.
    assert result.result is not None
    sent = result.result.output["clock"]
    api = [e for e in result.exchanges if e.operation in ("createImageTask", "getImageTask")]
    scale = result.frame.scale
    lags = [exchange.provider_time - theirs for theirs, exchange in zip(sent, api, strict=True)]
    assert min(lags) > -0.01 * scale and statistics.median(lags) < 0.1 * scale, (scale, lags)


@needs_faketime
@pytest.mark.parametrize("flags", [
    pytest.param(("--pause", "0", "--cpu-ms", "25"), id="no-pause-25ms-cpu"),
    pytest.param(("--pause", "0.01", "--cpu-ms", "25"), id="10ms-polling-25ms-cpu"),
])
async def test_a_tight_loop_is_caught_through_25ms_of_client_cpu(flags: tuple[str, ...]) -> None:
    result = await run(realtime(*flags))
    assert {d.rule for d in result.deviations} == {"client.poll-interval"}


@needs_faketime
async def test_a_timed_thread_wait_is_not_judged_and_never_hangs() -> None:
    # libfaketime 0.9.10 leaves sem_clockwait in real time: the wait would last for years.
    result = await run(realtime("--thread-wait"), startup_slack=30.0)
    assert result.seconds < 15
    assert result.frame is not None and not result.frame.virtualized
    assert "sem_clockwait" in (result.frame.reason or "")
    assert {n.rule for n in result.not_judged} >= {"client.poll-interval", "scenario.outcome"}
    assert [d.rule for d in result.deviations] == []


def test_the_frame_sees_through_scripts_and_refuses_static_and_go_binaries(tmp_path: Path) -> None:
    assert frame_blocker([sys.executable]) is None
    script = tmp_path / "client.sh"
    script.write_text("#!/usr/bin/env bash\necho hi\n")
    script.chmod(0o755)
    assert frame_blocker([str(script)]) is None
    static = tmp_path / "static"
    # A minimal 64-bit ELF with one PT_LOAD program header and no PT_INTERP.
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0,
                                                               64, 56, 1, 64, 0, 0)
    static.write_bytes(header + struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, 0, 0, 0))
    static.chmod(0o755)
    assert "statically linked" in (frame_blocker([str(static)]) or "")
    go = tmp_path / "go-client"
    go.write_bytes(header.replace(b"\x01\x00\x40\x00\x00\x00", b"\x01\x00\x40\x00\x00\x00", 1)
                   + struct.pack("<IIQQQQQQ", 3, 4, 0, 0, 0, 0, 0, 0) + b"\xff Go buildinf:")
    go.chmod(0o755)
    assert "Go program" in (frame_blocker([str(go)]) or "")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build a static binary")
async def test_a_static_binary_gets_not_judged_timing_never_a_deviation(tmp_path: Path) -> None:
    source = tmp_path / "wrap.c"
    source.write_text("#include <unistd.h>\nint main(int c, char **v) { execvp(v[1], v + 1); return 127; }\n")
    binary = tmp_path / "wrap"
    built = subprocess.run(["gcc", "-static", "-o", str(binary), str(source)],
                           capture_output=True, check=False)
    if built.returncode != 0:
        pytest.fail("gcc -static failed (Debian's libc6-dev gives a static libc): "
                    + built.stderr.decode()[-200:])
    # A tight loop in real time: at the scenario's scale it would look like correct pacing, so
    # pacing cannot be judged either way; the frame says why, and nothing blames the client.
    client = CommandClient([str(binary), sys.executable, str(CLIENT), "--pause", "0.01"])
    result = await run(client)
    assert result.frame is not None and result.frame.kind == "none"
    assert "statically linked" in (result.frame.reason or "")
    assert "client.poll-interval" in {n.rule for n in result.not_judged}
    assert all(not (d.path or "").startswith("timing.") for d in result.deviations)
    assert [d.rule for d in result.deviations] == []


# --- the scale ---------------------------------------------------------------------------


def test_the_command_line_scale_overrides_the_scenarios_own() -> None:
    never = CLOUDSWAY.scenario("never-finishes")
    assert never.time_scale == 1000
    assert scenario_scale(CLOUDSWAY, never, 1.0) == 1.0
    assert scenario_scale(CLOUDSWAY, never) == 1000


@pytest.mark.parametrize("provider", list(contracts.available()))
def test_every_scenario_scale_keeps_25ms_of_client_cpu_below_the_gaps_it_judges(provider: str) -> None:
    from imagegen_conformance.harness.run._runner import timing_thresholds

    contract = contracts.load(provider)
    for scenario in contract.scenarios:
        if scenario.expect.outcome == "gives_up" or scenario.time_scale:
            continue  # not judged at that speed (see test_pacing_at_a_scale_too_fast_to_see_it_is_not_judged)
        scale = scenario_scale(contract, scenario)
        for gap in timing_thresholds(contract, scenario):
            assert 0.01 + 0.025 * scale <= 0.7 * gap + 1e-9, (scenario.id, scale, gap)


def test_the_scale_follows_what_the_scenario_judges() -> None:
    from imagegen_conformance.harness.run._runner import IN_PROCESS_OVERHEAD, judged_gaps

    fal = contracts.load("fal")
    assert judged_gaps(fal, fal.scenario("happy-path")) == {"client.poll-interval": 0.1}
    assert judged_gaps(fal, fal.scenario("rate-limited-submit")) == {"client.retry-after": 1.0}
    assert judged_gaps(fal, fal.scenario("transient-status-503")) == {"client.retries-transient": 0.1}
    assert judged_gaps(fal, fal.scenario("model-error")) == {"scenario.deadline": 6.0}
    assert scenario_scale(fal, fal.scenario("happy-path")) == 2.4
    # One 429 is one gap: no second chance if the machine stalls on it, so twice the margin.
    assert scenario_scale(fal, fal.scenario("rate-limited-submit")) == 13.8
    assert scenario_scale(fal, fal.scenario("model-error")) == 100
    # A callable in this process costs 5 ms a request, not a process's 25: five times faster.
    assert scenario_scale(fal, fal.scenario("happy-path"), overhead=IN_PROCESS_OVERHEAD) == 12
    # The scenario's own time_scale: it judges images, happy-path judges the same polling.
    assert scenario_scale(fal, fal.scenario("custom-size-png")) == 100


@needs_faketime
async def test_a_tight_loop_where_polling_is_not_judged_is_reported_not_judged_not_passed() -> None:
    # task-fails judges the error and its deadline: at x100 (x20 on the most loaded machine),
    # 25 ms of CPU is 2.5 (0.5) provider s, so the loop's gaps look long enough for the 0.5 s
    # minimum; the report says the poll interval was not judged.
    result = await run(realtime("--pause", "0", "--cpu-ms", "25"), "task-fails")
    assert result.time_scale >= 20 and [d.rule for d in result.deviations] == []
    [note] = result.not_judged
    assert note.rule == "client.poll-interval" and "--time-scale" in note.reason


async def test_pacing_at_a_scale_too_fast_to_see_it_is_not_judged(
    cloudsway_faulty_client: object,
) -> None:
    from imagegen_conformance.harness import CallableClient

    polite = CallableClient(cloudsway_faulty_client(deadline=300.0))  # type: ignore[operator]
    result = await run_scenario(CLOUDSWAY, CLOUDSWAY.scenario("never-finishes"), polite)
    [note] = result.not_judged
    assert note.rule == "client.poll-interval" and "--time-scale" in note.reason
    assert result.deviations == []


def test_cli_time_scale_is_the_scenarios_scale(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["run", "-p", "cloudsway", "-s", "never-finishes", "--time-scale",
                                       "2000", "--report", "json", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    [scenario] = json.loads(out.read_text())["scenarios"]
    assert scenario["time_scale"] == 2000


# --- an unreachable target ---------------------------------------------------------------


def test_an_unreachable_target_is_the_targets_failure_with_exit_3(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["run", "-p", "cloudsway", "--target", f"http://127.0.0.1:{port}",
                                       "--report", "json", "--out", str(out)])
    assert result.exit_code == Report.UNREACHABLE == 3, result.stderr
    data = json.loads(out.read_text())
    assert data["ok"] is False and f"127.0.0.1:{port}" in data["target_error"]
    assert all(s["deviations"] == [] and "unreachable" in s["skipped"] for s in data["scenarios"])


# --- not judged in every report ----------------------------------------------------------


async def test_not_judged_checks_appear_in_every_report_format(cloudsway_faulty_client: object) -> None:
    from rich.console import Console

    from imagegen_conformance.harness import CallableClient, render_terminal

    polite = CallableClient(cloudsway_faulty_client(deadline=300.0))  # type: ignore[operator]
    result = await run_scenario(CLOUDSWAY, CLOUDSWAY.scenario("never-finishes"), polite)
    report = Report("cloudsway", polite.name, "mock", results=[result])
    data = json.loads(report.to_json())
    assert data["summary"]["not_judged"] == 1
    [entry] = data["scenarios"][0]["not_judged"]
    assert entry["rule"] == "client.poll-interval" and entry["reason"]
    assert data["scenarios"][0]["frame"]["kind"] == "told"
    xml = JUnitXml.fromstring(render_junit(report))
    skipped = [case for suite in xml for case in suite
               if case.name == "client.poll-interval" and case.is_skipped]
    assert skipped and "not judged" in skipped[0].result[0].message
    assert "not judged" in render_html(report)
    console = Console(record=True, width=200)
    render_terminal(report, console)
    assert "not judged" in console.export_text()


# --- no verdict depends on a race --------------------------------------------------------


async def test_fal_invalid_input_runs_the_same_way_every_time() -> None:
    # Its task is over in a fraction of a provider second: in time, whether the first poll found
    # it done was a race (and with it whether a tight loop was caught). One step per poll.
    from imagegen_conformance.harness import load_client

    fal = contracts.load("fal")
    scenario = fal.scenario("invalid-input")
    assert scenario.lifecycle == "polls"
    seen = []
    for _ in range(2):
        result = await run_scenario(fal, scenario, load_client("imagegen_conformance.clients.fal:run"))
        assert result.deviations == []
        seen.append([(e.operation, e.status) for e in result.exchanges])
    assert seen[0] == seen[1]
    assert [s for op, s in seen[0] if op == "getRequestStatus"] == [202, 202, 202, 202, 200]


async def test_a_machine_that_got_busier_during_the_run_runs_the_scenario_again_slower(
    cloudsway_faulty_client: object, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imagegen_conformance.harness import CallableClient
    from imagegen_conformance.harness.run import _runner

    # Idle when the scale is chosen, three times busier when the client ends: the poll
    # interval passed at a scale that load may have made too fast to tell, so it runs again.
    figures = iter([1.0, 3.0])
    monkeypatch.setattr(_runner, "machine_slowdown", lambda: next(figures, 3.0))
    monkeypatch.setattr(_runner, "_last_slowdown", (-1e9, 1.0))
    polite = CallableClient(cloudsway_faulty_client())  # type: ignore[operator]
    first = scenario_scale(CLOUDSWAY, CLOUDSWAY.scenario("happy-path"), overhead=_runner.IN_PROCESS_OVERHEAD)
    result = await run(polite)  # type: ignore[arg-type]
    assert result.time_scale == round(first / 3, 1) and result.deviations == []
    # A scenario that judges no pacing (its own time_scale) is not run again.
    result = await run(polite, "batch-portrait")  # type: ignore[arg-type]
    assert result.time_scale == 100
