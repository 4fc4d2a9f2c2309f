"""Staging a build: every artifact under one content-hashed build id, and its parameters."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .lambda_zip import build_lambda_zip
from .paths import PARAMS_DIR, REPO, SAGA_DEFINITION, TEMPLATES_DIR
from .render import render_generated


@dataclass(frozen=True)
class Build:
    """A staged build: its id, its directory, and what the root stack's parameters name."""

    build_id: str
    directory: Path
    keys: Mapping[str, str]  # artifact name -> S3 key (under the build id)


def stage(out: Path, *, repo: Path = REPO, lambda_dependencies: bool = True) -> Build:
    """Stage templates, the saga definition (unchanged) and the Lambda zip under a build id."""
    scratch = out / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    generated = render_generated(scratch / "templates", repo)
    files: dict[str, Path] = {
        f"templates/{path.name}": path
        for path in sorted((repo / TEMPLATES_DIR.relative_to(REPO)).glob("*.yaml"))
    }
    files |= {f"templates/{path.name}": path for path in generated.values()}
    files["checkout_saga.asl.json"] = repo / SAGA_DEFINITION.relative_to(REPO)
    files["saga-adapters.zip"] = build_lambda_zip(
        scratch / "saga-adapters.zip", repo=repo, dependencies=lambda_dependencies
    )
    digest = hashlib.sha256()
    for name, path in sorted(files.items()):
        digest.update(name.encode() + b"\0" + path.read_bytes())
    build_id = digest.hexdigest()[:16]
    directory = out / build_id
    shutil.rmtree(directory, ignore_errors=True)
    for name, path in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, directory / name)
    shutil.rmtree(scratch, ignore_errors=True)
    keys = {name: f"{build_id}/{name}" for name in files}
    return Build(build_id, directory, keys)


def root_parameters(build: Build, *, env: str, region: str) -> dict[str, str]:
    """The root stack's parameters: the env/Region file plus where this build's artifacts are."""
    parameters: dict[str, str] = json.loads((PARAMS_DIR / env / f"{region}.json").read_text())
    return parameters | {
        "TemplatePrefix": build.build_id + "/templates",
        "SagaDefinitionKey": build.keys["checkout_saga.asl.json"],
        "AdapterCodeKey": build.keys["saga-adapters.zip"],
    }
