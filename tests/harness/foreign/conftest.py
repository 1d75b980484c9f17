"""Fixtures of the foreign-client tests: ``imagegen-conformance run`` as a user types it.

The clients beside this file are run as commands (pytest's importlib mode does not make them
importable, and a command is what they are).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from imagegen_conformance.harness.cli import main

FOREIGN = Path(__file__).parent


class RunCli:
    """``imagegen-conformance run`` in this process, read back from its JSON report."""

    folder = FOREIGN

    def __call__(self, provider: str, client: str, *options: str) -> dict[str, dict[str, Any]]:
        """``run -p PROVIDER -c CLIENT [OPTIONS]``: each scenario's JSON result, by scenario id.

        Only the report's format and place are added: every option that shapes a run keeps
        its default unless ``options`` says otherwise.
        """
        with tempfile.TemporaryDirectory(prefix="foreign-report-") as tmp:
            out = Path(tmp) / "report.json"
            result = CliRunner().invoke(main, [
                "run", "-p", provider, "-c", client, "--report", "json", "--out", str(out), *options,
            ])
            assert result.exit_code in (0, 1), (result.exit_code, result.stderr, result.exception)
            data = json.loads(out.read_text())
        assert result.exit_code == (0 if data["ok"] else 1)
        return {s["scenario"]: s for s in data["scenarios"]}

    @staticmethod
    def rules(result: dict[str, Any]) -> set[str]:
        """The rule ids one scenario's result reports."""
        return {d["rule"] for d in result["deviations"]}

    @staticmethod
    def explain(result: dict[str, Any]) -> str:
        """For an assertion message: each deviation, and the client's own words."""
        lines = [f"{d['rule']}: {d['message']} (expected {d.get('expected')!r}, actual {d.get('actual')!r})"
                 for d in result["deviations"]]
        client = result["result"]
        lines.append(f"client ok={client['ok']} error={client.get('error')!r}")
        lines.append(f"stderr: {(client.get('stderr') or '')[-600:]}")
        return "\n".join(lines)


@pytest.fixture(scope="session")
def imagegen_run_cli() -> RunCli:
    """``imagegen_run_cli(provider, client, *options)``, plus ``.rules(result)``, ``.explain(result)``."""
    return RunCli()
