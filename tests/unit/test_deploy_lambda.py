"""The adapter Lambdas' zip: the handlers, the platform library and the generated contracts,
byte for byte, importable from the zip alone (third-party libraries aside)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from saga_tasks.registry import HANDLERS
from tools import deployer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def adapter_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip as `python -m tools.deployer build` makes it, without the pip-installed libraries."""
    out = tmp_path_factory.mktemp("lambda") / "saga-adapters.zip"
    return Path(deployer.build_lambda_zip(out, dependencies=False))


def test_the_zip_holds_every_handler_and_every_generated_contract_unchanged(
    adapter_zip: Path,
) -> None:
    with zipfile.ZipFile(adapter_zip) as archive:
        names = set(archive.namelist())
        for handler in HANDLERS.values():
            path = handler.__module__.replace(".", "/") + ".py"
            assert archive.read(path) == (REPO / path).read_bytes(), path
        contracts = REPO / "gen" / "python"
        generated = [p for p in (contracts / "marketplace").rglob("*.py")]
        assert generated
        for source in generated:
            name = str(source.relative_to(contracts))
            assert archive.read(name) == source.read_bytes(), name

    assert "saga_tasks/registry.py" in names
    assert not [n for n in names if "__pycache__" in n or "/migrations/" in n]


def test_every_handler_imports_from_the_zip_alone(adapter_zip: Path) -> None:
    # A fresh interpreter whose only path to our code is the zip: the repository and
    # gen/python leave sys.path; the standard library and site-packages stay for grpcio,
    # protobuf and pydantic (the Lambda gets those from requirements.txt).
    handlers = {name: fn.__module__ for name, fn in HANDLERS.items()}
    script = f"""
import importlib, json, sys
repo = {str(REPO)!r}
ours = lambda p: p in ("", repo) or (p.startswith(repo + "/") and "site-packages" not in p)
sys.path = [{str(adapter_zip)!r}] + [p for p in sys.path if not ours(p)]
found = {{}}
for name, module in {handlers!r}.items():
    loaded = importlib.import_module(module)
    assert callable(loaded.handler), name
    found[name] = loaded.__file__
contract = importlib.import_module("marketplace.inventory.v1.inventory_service_pb2")
found["contract"] = contract.__file__
print(json.dumps(found))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd="/", check=False
    )
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)

    assert set(files) == set(HANDLERS) | {"contract"}
    for name, file in files.items():
        assert file.startswith(str(adapter_zip) + "/"), (name, file)


def test_the_lambda_requirements_cover_what_the_adapters_import_from_outside() -> None:
    wanted = {
        line.split(">=")[0].strip()
        for line in deployer.LAMBDA_REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }

    assert wanted == {"grpcio", "grpcio-status", "protobuf", "pydantic", "pydantic-settings"}
    assert deployer.LAMBDA_PLATFORM == ("manylinux2014_aarch64", "3.12")
    saga = deployer.load_template(deployer.TEMPLATES_DIR / "saga.yaml")
    for resource in saga["Resources"].values():
        if resource["Type"] == "AWS::Lambda::Function":
            assert resource["Properties"]["Runtime"] == "python3.12"
            assert resource["Properties"]["Architectures"] == ["arm64"]
