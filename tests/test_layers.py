"""The layers hold: contracts <- mocks <- harness, and harness never names a concrete provider.

Every import is read, relative ones and those inside functions included, resolved to the
installed module name (``imagegen_conformance.<folder>....``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from imagegen_conformance import contracts, harness, mocks

ROOT = Path(__file__).parents[1]
NS = "imagegen_conformance"
FOLDERS = ("contracts", "mocks", "harness", "clients")
PROVIDER_MODULES = {f"{NS}.mocks.{p}" for p in contracts.available()}
# Inside harness, a subpackage imports only those to its left (and the top-level modules import any).
HARNESS_ORDER = ("rules", "report", "proxy", "run", "live", "cli")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([NS, *parts])


def resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never executed)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports_in(path: Path, *, runtime_only: bool = False) -> list[str]:
    """Every module a file imports (``from X import y`` yields X and X.y), resolved.

    ``runtime_only`` leaves out imports under ``if TYPE_CHECKING:``, which never run; the layer
    checks read them too.
    """
    current = module_name(path)
    found: list[str] = []
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node, current, path.name == "__init__.py")
            found.append(target)
            found += [f"{target}.{alias.name}" for alias in node.names]
    return found


def imports_of(folder: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import in one of the repository's package folders."""
    files = sorted((ROOT / folder).rglob("*.py"))
    return [(str(p.relative_to(ROOT)), m) for p in files for m in imports_in(p)]


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == NS and len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    return parts[0] if parts[0] in FOLDERS else None


def test_nothing_imports_the_uninstalled_names() -> None:
    # Installed, only `imagegen_conformance` exists: a bare `import mocks` would find a user's package.
    bad = [(f, m) for folder in FOLDERS for f, m in imports_of(folder) if m.split(".")[0] in FOLDERS]
    assert bad == []


def test_contracts_import_neither_mocks_nor_harness_nor_web_frameworks() -> None:
    bad = [(f, m) for f, m in imports_of("contracts")
           if layer(m) in {"mocks", "harness", "clients"}
           or m.split(".")[0] in {"aiohttp", "pytest", "respx", "httpx"}]
    assert bad == []


def test_mocks_never_import_harness_or_clients() -> None:
    assert [(f, m) for f, m in imports_of("mocks") if layer(m) in {"harness", "clients"}] == []


def test_engine_never_imports_a_provider_module_or_the_mocks_package() -> None:
    bad = [(f, m) for f, m in imports_of("mocks") if f.startswith("mocks/engine")
           and (m == f"{NS}.mocks" or any(m == p or m.startswith(p + ".") for p in PROVIDER_MODULES)
                or m.startswith(f"{NS}.mocks._"))]
    assert bad == []


def test_harness_never_imports_a_concrete_provider() -> None:
    bad = [(f, m) for f, m in imports_of("harness")
           if any(m == p or m.startswith(p + ".") for p in PROVIDER_MODULES)]
    assert bad == []


def test_reference_clients_stand_alone() -> None:
    # A reference client is what a user would write: it knows nothing of the project's packages.
    assert [(f, m) for f, m in imports_of("clients") if layer(m) not in {None, "clients"}] == []


def test_harness_subpackages_import_only_lower_ones() -> None:
    bad = []
    for f, m in imports_of("harness"):
        parts = Path(f).parts
        if len(parts) < 3:
            continue  # harness/<module>.py: the top of the harness may use any subpackage
        mine = HARNESS_ORDER.index(parts[1])
        target = m.split(".")
        if target[:2] == [NS, "harness"] and len(target) > 2 and target[2] in HARNESS_ORDER:
            if HARNESS_ORDER.index(target[2]) > mine:
                bad.append((f, m))
        elif target[:2] == [NS, "harness"] and len(target) > 2:
            bad.append((f, m))  # a subpackage importing the harness's top-level modules
    assert bad == []


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            graph[module_name(path)] = set(imports_in(path, runtime_only=True))
    for node in graph:
        graph[node] = {m for m in graph[node] if m in graph and m != node}
    # Packages import their own modules to re-export them; a cycle through an __init__ that only
    # re-exports is not a cycle of modules, so edges into a package count as edges into its modules.
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue  # a package re-exporting its own module
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_layer_check_would_catch_a_violation(tmp_path: Path) -> None:
    # The scanner itself must resolve relative and function-level imports.
    source = "def f():\n    from ..mocks import fal\nimport imagegen_conformance.mocks.fal\n"
    fake = ROOT / "harness" / "run" / "_probe_of_the_scanner.py"
    tree_imports = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            tree_imports.append(resolve(node, module_name(fake), False))
        elif isinstance(node, ast.Import):
            tree_imports += [a.name for a in node.names]
    assert tree_imports == [f"{NS}.harness.mocks", f"{NS}.mocks.fal"] or set(tree_imports) == {
        f"{NS}.harness.mocks", f"{NS}.mocks.fal"}


PUBLIC = ["contracts", "mocks", "mocks.engine", "harness", "harness.rules", "harness.report",
          "harness.proxy", "harness.run", "harness.live", "harness.cli"]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_are_declared_once_and_sorted(name: str) -> None:
    package = importlib.import_module(f"{NS}.{name}")
    names = package.__all__
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    assert len(set(names)) == len(names)
    assert all(hasattr(package, n) for n in names)


def test_the_packages_are_the_installed_ones() -> None:
    assert Path(mocks.__file__).parent == ROOT / "mocks"
    assert harness.__name__ == f"{NS}.harness"
