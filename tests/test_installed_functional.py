"""The installed package works away from the checkout: nothing is found through its top-level folders.

Under pytest the repository root is on ``sys.path``, so ``contracts`` (the folder) imports and a
lookup by that name passes here while ``imagegen-conformance serve -p dify`` fails for a user.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contracts", "mocks", "harness", "clients")


def test_every_mock_starts_outside_the_repository(tmp_path: Path) -> None:
    code = (
        "from imagegen_conformance import contracts\n"
        "from imagegen_conformance.mocks import MockServer\n"
        "for provider in contracts.available():\n"
        "    MockServer(provider)\n"
        "print('ok')\n"
    )
    # -I: neither the working directory nor PYTHONPATH is on sys.path, as for an installed user.
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_package_data_is_looked_up_by_the_installed_name() -> None:
    lookup = re.compile(r"""resources\.(?:files|as_file)\(\s*["']([\w.]+)["']""")
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for package in PACKAGES for path in (ROOT / package).rglob("*.py")
        for name in lookup.findall(path.read_text("utf-8"))
        if not name.startswith("imagegen_conformance")
    ]
    assert wrong == []
