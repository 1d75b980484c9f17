"""A sixth provider from outside the package: its contract folder plus one module, nothing else.

The provider ``acme`` is a team's in-house image API that answers like Cloudsway: its folder
lives in a temporary directory named by ``IMAGEGEN_CONTRACTS`` (or ``--contracts``), and its
mock module, beside the folder, subclasses the built-in Cloudsway provider. No file of the
package is touched; every command and the pytest plugin see it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from imagegen_conformance import contracts
from imagegen_conformance.contracts import ContractError

Cli = Callable[..., Awaitable[Any]]


def make_acme(root: Path, *, port: int = 8790) -> Path:
    """``root/acme/`` (Cloudsway's contract, renamed) and ``root/acme_images.py`` (its mock)."""
    source = contracts.contract_dir("cloudsway")
    folder = root / "acme"
    folder.mkdir(parents=True)
    shutil.copy(source / "openapi.yaml", folder / "openapi.yaml")
    shutil.copy(source / "scenarios.yaml", folder / "scenarios.yaml")
    behaviour = yaml.safe_load((source / "behaviour.yaml").read_text())
    behaviour.update(
        provider="acme",
        mock="acme_images:AcmeProvider",
        port=port,
        hosts={"api": "https://images.acme.example"},
        live={"base_url": "https://images.acme.example", "base_url_var": "ACME_BASE_URL",
              "key_var": "ACME_API_KEY"},
    )
    (folder / "behaviour.yaml").write_text(yaml.safe_dump(behaviour, sort_keys=False))
    (root / "acme_images.py").write_text(textwrap.dedent('''
        from imagegen_conformance.mocks.cloudsway import CloudswayProvider


        class AcmeProvider(CloudswayProvider):
            """Acme's in-house API answers like Cloudsway."""
    '''))
    return root


@pytest.fixture
def acme_env(tmp_path: Path, probe_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    root = make_acme(tmp_path / "team-contracts")
    return probe_env(IMAGEGEN_CONTRACTS=str(root))


@pytest.fixture
def acme_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    root = make_acme(tmp_path / "team-contracts")
    monkeypatch.setenv("IMAGEGEN_CONTRACTS", str(root))
    yield "acme"
    monkeypatch.delenv("IMAGEGEN_CONTRACTS")
    contracts.load.cache_clear()


async def test_providers_lists_it_beside_the_built_in_ones(acme_env: dict[str, str], probe_cli: Cli) -> None:
    ran = await probe_cli("providers", env=acme_env)
    assert ran.code == 0, ran.err
    names = [line.split(":")[0] for line in ran.out.splitlines() if not line.startswith(" ")]
    assert names == [*contracts.available(), "acme"]


Proc = asyncio.subprocess.Process


async def _serve_lines(env: dict[str, str], *args: str, count: int) -> tuple[Proc, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagegen_conformance", "serve", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    while len(lines) < count:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if not line:
            raise AssertionError("serve ended: " + (await proc.stderr.read()).decode())
        lines.append(line)
    return proc, lines


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_serve_answers_as_its_module_says(acme_env: dict[str, str], probe_cli: Cli) -> None:
    proc, [line] = await _serve_lines(acme_env, "--provider", "acme", "--port", "0", count=1)
    try:
        name, url = line.split()
        assert name == "acme"
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer k"}) as http:
            created = await http.post("/v2/ai/ep/images/generations", json={"prompts": "a fox"})
            assert created.status_code == 200 and created.json()["status"] == "success"
            polled = await http.get(f"/v2/ai/ep/images/tasks/{created.json()['taskId']}")
            assert polled.status_code == 200 and polled.json()["status"] in {"pending", "processing"}
            health = (await http.get("/__mock/health")).json()
            assert health["provider"] == "acme"
    finally:
        await _stop(proc)


async def test_serve_all_includes_it(acme_env: dict[str, str], probe_cli: Cli) -> None:
    everyone = [*contracts.available(), "acme"]
    roles = sum(len(contracts.load(p).behaviour.hosts) for p in contracts.available()) + 1
    proc, lines = await _serve_lines(acme_env, "--provider", "all", "--port", "0", count=roles)
    try:
        served = {line.split()[0].split(":")[0] for line in lines}
        assert served == set(everyone)
    finally:
        await _stop(proc)


async def test_run_uses_the_reference_client_its_contract_names(acme_env: dict[str, str], probe_cli: Cli,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    ran = await probe_cli("run", "-p", "acme", "--report", "json", "--out", str(out), env=acme_env,
                        limit=120)
    report = json.loads(out.read_text())
    assert ran.code == 0, (ran.out, ran.err)
    assert report["provider"] == "acme"
    cloudsway = {s.id for s in contracts.load("cloudsway").scenarios}
    assert {r["scenario"] for r in report["scenarios"]} == cloudsway
    assert all(r["client"] == "imagegen_conformance.clients.cloudsway:run" for r in report["scenarios"])


async def test_probe_says_not_configured(acme_env: dict[str, str], probe_cli: Cli) -> None:
    ran = await probe_cli("probe", "-p", "acme", env=acme_env)
    assert ran.code == 4, (ran.out, ran.err)
    assert "ACME_API_KEY" in ran.out + ran.err


async def test_contracts_option_does_what_the_variable_does(tmp_path: Path, probe_cli: Cli,
                                                           probe_env: Callable[..., dict[str, str]]) -> None:
    root = make_acme(tmp_path / "elsewhere")
    env = probe_env()
    env.pop("IMAGEGEN_CONTRACTS", None)
    ran = await probe_cli("scenarios", "-p", "acme", "--contracts", str(root), env=env)
    assert ran.code == 0, ran.err
    assert "happy-path" in ran.out or contracts.load("cloudsway").scenarios[0].id in ran.out
    without = await probe_cli("scenarios", "-p", "acme", env=env)
    assert without.code == 2 and "unknown provider 'acme'" in without.err


def test_the_generated_fixture_serves_it(pytester: pytest.Pytester, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_acme(tmp_path / "team-contracts")
    pytester.makepyfile(test_acme='''
        import httpx

        def test_acme_fixture(acme_mock):
            r = httpx.post(acme_mock.url + "/v2/ai/ep/images/generations", headers=acme_mock.headers,
                           json={"prompts": "a fox"})
            assert r.status_code == 200 and r.json()["status"] == "success"
            assert acme_mock.server.contract.provider == "acme"
    ''')
    monkeypatch.setenv("IMAGEGEN_CONTRACTS", str(root))  # the subprocess inherits it
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_loader_finds_it_and_a_twin_is_refused(acme_loaded: str, tmp_path: Path) -> None:
    assert "acme" in contracts.available()
    assert contracts.load("acme").behaviour.mock == "acme_images:AcmeProvider"
    twin = make_acme(tmp_path / "twin")
    contracts.add_contracts(twin)
    try:
        with pytest.raises(ContractError, match="provider 'acme' is defined twice"):
            contracts.available()
    finally:
        from imagegen_conformance.contracts import _loader

        _loader._extra.clear()
        _loader._clear()
