"""The Dockerfiles, parsed (no Docker engine here): one per deployable, multi-stage, pinned slim
bases, a non-root user, a health check the task definition repeats, the deployable's module."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tools import deployer

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "deploy" / "docker"
# name:tag with a full X.Y.Z version (no floating "3.12" or "latest"), or a digest.
PINNED = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    value: str


def parse(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, comments dropped, continuations joined."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
        pending = ""
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions split by FROM, each stage starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))


def test_there_is_one_dockerfile_per_deployable_and_no_other() -> None:
    names = {path.name.removesuffix(".Dockerfile") for path in DOCKERFILES}

    assert names == {d.name for d in deployer.DEPLOYABLES}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.stem)
def test_every_base_image_is_pinned_and_slim(path: Path) -> None:
    froms = [i.value.split()[0] for i in parse(path) if i.keyword == "FROM"]

    assert len(froms) >= 2  # multi-stage: the build tools never reach the runtime image
    for image in froms:
        assert PINNED.match(image), image
        assert ":" in image or "@sha256:" in image, image
        assert "latest" not in image
        assert "slim" in image or "distroless" in image, image


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.stem)
def test_the_runtime_stage_runs_as_a_non_root_user(path: Path) -> None:
    runtime = stages(parse(path))[-1]
    users = [i.value for i in runtime if i.keyword == "USER"]

    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    last_user = max(n for n, i in enumerate(runtime) if i.keyword == "USER")
    starts = [n for n, i in enumerate(runtime) if i.keyword in ("ENTRYPOINT", "CMD")]
    assert starts
    assert all(n > last_user for n in starts)
    assert not [i for i in runtime[last_user:] if i.keyword == "RUN"]  # nothing runs as root after


@pytest.mark.parametrize("deployable", deployer.DEPLOYABLES, ids=lambda d: d.name)
def test_the_image_runs_the_deployable_and_checks_its_health_as_ecs_does(
    deployable: Any,
) -> None:
    runtime = stages(parse(DOCKER_DIR / f"{deployable.name}.Dockerfile"))[-1]
    by_keyword = {i.keyword: i.value for i in runtime}

    command = exec_form(by_keyword["CMD"])
    assert command[:3] == ["python", "-m", deployable.module]
    entrypoint = exec_form(by_keyword["ENTRYPOINT"])
    assert entrypoint == ["python", "/app/deploy/docker/entrypoint.py"]
    healthcheck = shlex.split(by_keyword["HEALTHCHECK"])
    assert "CMD" in healthcheck
    probe = exec_form(by_keyword["HEALTHCHECK"].split("CMD", 1)[1].strip())
    assert ["CMD", *probe] == deployer.health_command(deployable)
    if deployable.port is not None:
        assert by_keyword["EXPOSE"] == str(deployable.port)


def test_every_file_the_images_copy_exists() -> None:
    for path in DOCKERFILES:
        for instruction in parse(path):
            if instruction.keyword != "COPY" or instruction.value.startswith("--from"):
                continue
            *sources, _ = instruction.value.split()
            for source in sources:
                assert (REPO / source).exists(), (path.name, source)


def test_the_dockerfiles_share_their_build_and_runtime_setup() -> None:
    # Same stages except the lines naming the deployable: one fix reaches every image.
    def shared(path: Path) -> list[Instruction]:
        return [i for i in parse(path) if i.keyword not in ("CMD", "HEALTHCHECK", "EXPOSE")]

    first = shared(DOCKERFILES[0])
    for path in DOCKERFILES[1:]:
        assert shared(path) == first, path.name
    for path in DOCKERFILES:
        assert (path.parent / f"{path.name}.dockerignore").is_file()
