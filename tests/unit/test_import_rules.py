"""The layering rules, read from every module's imports (including imports inside functions):
services never import each other; the gateway imports only the contracts and the platform
library; the platform library imports no service, worker, saga task, simulator or gateway; and
inside a service the dependency rule: domain <- service_layer <- adapters, entrypoints."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Our own top-level packages; anything else imported is the standard library or a dependency.
OURS = frozenset(
    {
        "marketplace",  # the generated contracts (gen/python)
        "marketplace_platform",
        "services",
        "gateway",
        "workers",
        "saga_tasks",
        "simulators",
        "local_supervisor",
        "verification",
        "bench",
        "tools",
        "tests",
    }
)
SERVICES = sorted(p.name for p in (REPO / "services").iterdir() if (p / "__init__.py").is_file())


@dataclass(frozen=True)
class Import:
    """One imported module, where it is imported from."""

    importer: str  # the importing file, relative to its root
    module: str  # the imported module's dotted name


def imports_under(root: Path) -> Iterator[Import]:
    """Every absolute import of our own packages in the .py files below `root`."""
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif _is_import_module_call(node):
                assert isinstance(node, ast.Call)
                names = [node.args[0].value]  # type: ignore[attr-defined]
            else:
                continue
            for name in names:
                if name.split(".")[0] in OURS:
                    yield Import(str(path.relative_to(root.parent)), name)


def _is_import_module_call(node: ast.AST) -> bool:
    """`importlib.import_module("dotted.name")` with a literal name: an import all the same."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
        == "import_module"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def breaking(root: Path, allowed: frozenset[str]) -> list[Import]:
    """The imports below `root` of our packages outside `allowed` (dotted prefixes)."""
    return [
        found
        for found in imports_under(root)
        if not any(found.module == ok or found.module.startswith(ok + ".") for ok in allowed)
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service(service: str) -> None:
    allowed = frozenset({"marketplace", "marketplace_platform", f"services.{service}"})
    assert breaking(REPO / "services" / service, allowed) == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_services_domain_imports_only_itself_and_the_platform(service: str) -> None:
    allowed = frozenset({"marketplace", "marketplace_platform", f"services.{service}.domain"})
    assert breaking(REPO / "services" / service / "domain", allowed) == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_services_use_cases_see_its_adapters_only_through_ports(service: str) -> None:
    own = f"services.{service}"
    allowed = frozenset(
        {"marketplace", "marketplace_platform", f"{own}.domain", f"{own}.service_layer"}
    )
    assert breaking(REPO / "services" / service / "service_layer", allowed) == []


def test_the_gateway_imports_only_the_contracts_and_the_platform_library() -> None:
    allowed = frozenset({"marketplace", "marketplace_platform", "gateway"})
    assert breaking(REPO / "gateway", allowed) == []


def test_the_platform_library_imports_no_service_worker_or_process() -> None:
    allowed = frozenset({"marketplace", "marketplace_platform"})
    assert breaking(REPO / "marketplace_platform", allowed) == []


def test_saga_tasks_reach_services_only_through_their_contracts() -> None:
    allowed = frozenset({"marketplace", "marketplace_platform", "saga_tasks"})
    assert breaking(REPO / "saga_tasks", allowed) == []


def test_the_rules_see_top_level_and_function_level_breaks(tmp_path: Path) -> None:
    # A broken layout: a service importing another at the top, one inside a function, a worker
    # by name through importlib, and a relative import (not ours to judge: it stays inside).
    cart = tmp_path / "services" / "cart"
    cart.mkdir(parents=True)
    (cart / "a.py").write_text("from services.checkout.domain import order\n")
    (cart / "b.py").write_text("def f():\n    import services.payment.bootstrap\n")
    (cart / "c.py").write_text("from . import a\nimport json\nfrom services.cart import a\n")
    (cart / "d.py").write_text("import importlib\nimportlib.import_module('workers.saga_engine')\n")
    allowed = frozenset({"marketplace", "marketplace_platform", "services.cart"})
    found = breaking(cart, allowed)
    assert sorted((f.importer, f.module) for f in found) == [
        ("cart/a.py", "services.checkout.domain"),
        ("cart/b.py", "services.payment.bootstrap"),
        ("cart/d.py", "workers.saga_engine"),
    ]
