"""The adapter Lambdas' zip, byte-reproducible from the same sources."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .paths import GENERATED_CONTRACTS, LAMBDA_PACKAGES, LAMBDA_PLATFORM, LAMBDA_REQUIREMENTS, REPO


def build_lambda_zip(out: Path, *, repo: Path = REPO, dependencies: bool = True) -> Path:
    """The adapter Lambdas' zip: their handlers, the platform library and the contracts."""
    staging = Path(tempfile.mkdtemp(prefix="saga-adapters-"))
    try:
        for package in LAMBDA_PACKAGES:
            _copy_sources(repo / package, staging / package)
        contracts = repo / GENERATED_CONTRACTS.relative_to(REPO)
        for top in sorted(contracts.iterdir()):
            if top.is_dir() and not top.name.startswith("."):
                _copy_sources(top, staging / top.name)
        if dependencies:
            platform, python = LAMBDA_PLATFORM
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(staging),
                 "--platform", platform, "--python-version", python, "--implementation", "cp",
                 "--only-binary=:all:", "-r", str(repo / LAMBDA_REQUIREMENTS.relative_to(REPO))],
                check=True,
            )  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(staging.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    # A fixed timestamp: the same sources give the same bytes and the same key.
                    info = zipfile.ZipInfo(str(path.relative_to(staging)), (1980, 1, 1, 0, 0, 0))
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, path.read_bytes())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _copy_sources(source: Path, target: Path) -> None:
    for path in source.rglob("*.py"):
        if "__pycache__" in path.parts or "migrations" in path.relative_to(source).parts:
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
