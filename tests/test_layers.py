"""The layers hold: contracts <- mocks <- harness, and harness never names a concrete provider."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import contracts
import harness
import mocks

ROOT = Path(__file__).parents[1]
PROVIDER_MODULES = {f"mocks.{p}" for p in contracts.PROVIDERS}


def imports_of(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every absolute import in a package."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((str(path.relative_to(ROOT)), node.module))
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def test_contracts_import_neither_mocks_nor_harness_nor_web_frameworks() -> None:
    bad = [(f, m) for f, m in imports_of("contracts")
           if top(m) in {"mocks", "harness", "aiohttp", "pytest", "respx", "httpx"}]
    assert bad == []


def test_mocks_never_import_harness() -> None:
    assert [(f, m) for f, m in imports_of("mocks") if top(m) == "harness"] == []


def test_engine_never_imports_a_concrete_provider() -> None:
    bad = [(f, m) for f, m in imports_of("mocks") if f.startswith("mocks/engine")
           and (m in PROVIDER_MODULES or any(m.startswith(p + ".") for p in PROVIDER_MODULES))]
    assert bad == []


def test_harness_never_imports_a_concrete_provider() -> None:
    bad = [(f, m) for f, m in imports_of("harness")
           if m in PROVIDER_MODULES or any(m.startswith(p + ".") for p in PROVIDER_MODULES)]
    assert bad == []


def test_layer_check_would_catch_a_violation(tmp_path: Path) -> None:
    # The scanner itself must see a forbidden import when there is one.
    (tmp_path / "x.py").write_text("import mocks.fal\nfrom harness import cli\n")
    tree = ast.parse((tmp_path / "x.py").read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert "mocks.fal" in names and "harness" in names


@pytest.mark.parametrize("package", [contracts, mocks, mocks.engine, harness], ids=lambda p: p.__name__)
def test_public_names_are_declared_once_and_sorted(package: object) -> None:
    names = package.__all__
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    assert all(hasattr(package, n) for n in names)
