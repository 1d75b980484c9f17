"""The core install works without hypothesis and schemathesis (the [check] extra brings them).

Each check runs in a fresh interpreter where a meta-path finder refuses to import either (and
their pytest plugin), as if they were not installed; the packages stay installed for the rest
of the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BLOCK = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = {"hypothesis", "schemathesis", "_hypothesis_pytestplugin", "_hypothesis_globals"}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
""")


def python(code: str, *, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def test_the_blocker_really_blocks() -> None:
    ran = python("import hypothesis")
    assert ran.returncode != 0 and "No module named 'hypothesis'" in ran.stderr


def test_every_module_but_the_generators_imports_without_them() -> None:
    ran = python("""
        import importlib, pkgutil
        import imagegen_conformance as root
        names = [m.name for m in pkgutil.walk_packages(root.__path__, "imagegen_conformance.")]
        for sub in ("contracts", "mocks", "harness", "clients"):
            pkg = importlib.import_module("imagegen_conformance." + sub)
            names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
        skipped = {"imagegen_conformance.harness.strategies", "imagegen_conformance.harness.stateful",
                   "imagegen_conformance.__main__"}
        for name in sorted(set(names) - skipped):
            importlib.import_module(name)
        print(len(names))
    """)
    assert ran.returncode == 0, ran.stderr
    assert int(ran.stdout) > 50


def test_run_verify_serve_and_probe_work_without_them() -> None:
    ran = python("""
        import contextlib, io, sys
        from click.testing import CliRunner
        from imagegen_conformance.harness.cli import main
        codes = {}
        for args in (["run", "-p", "cloudsway", "-s", "happy-path", "--report", "json"],
                     ["serve", "--fault", "http503"], ["verify", "--target", "http://127.0.0.1:9"],
                     ["probe", "-p", "cloudsway"], ["proxy", "--help"]):
            codes[args[0]] = CliRunner().invoke(main, args, env={"CLOUDSWAY_API_KEY": ""}).exit_code
        print(codes)
    """)
    assert ran.returncode == 0, ran.stderr
    # run passes; serve's bad fault is a usage error; nothing listens for verify; probe: not configured
    assert ran.stdout.strip() == "{'run': 0, 'serve': 2, 'verify': 3, 'probe': 4, 'proxy': 0}"


def test_check_and_the_strategies_say_how_to_get_them() -> None:
    ran = python("""
        from click.testing import CliRunner
        from imagegen_conformance.harness.cli import main
        result = CliRunner().invoke(main, ["check", "-p", "cloudsway"])
        print(result.exit_code)
        print(result.output)
        for module in ("strategies", "stateful"):
            try:
                __import__("imagegen_conformance.harness." + module)
            except ImportError as exc:
                print(exc)
    """)
    assert ran.returncode == 0, ran.stderr
    code, *lines = ran.stdout.splitlines()
    assert code == "2"
    text = "\n".join(lines)
    assert text.count("pip install 'imagegen-conformance[check]'") == 3


def test_the_pytest_plugin_works_without_them(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import httpx

        def test_create(cloudsway_mock):
            r = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                           headers=cloudsway_mock.headers, json={"prompts": "x"})
            assert r.status_code == 200
    """))
    ran = python("""
        import sys, pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-p",
                              "imagegen_conformance.harness.pytest_plugin", "test_user.py"]))
    """, cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 passed" in ran.stdout


@pytest.mark.parametrize("extra", ["check", "dev"])
def test_the_extras_bring_them(extra: str) -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith(("hypothesis", "schemathesis")) for d in project["dependencies"])
    wanted = project["optional-dependencies"][extra]
    direct = {"hypothesis>=6.100", "schemathesis>=4.0"} <= set(wanted)
    via_check = any(d.startswith("imagegen-conformance[") and "check" in d.split("[", 1)[1]
                    for d in wanted)
    assert direct or via_check
