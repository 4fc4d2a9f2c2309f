"""The Region fence as a process sees it without a database: REGION_EPOCH is a setting, and a
refusal by the fence's trigger (SQLSTATE MPF01) is Fenced, a lost writer for this process
(marketplace_platform.db), answered UNAVAILABLE on the wire."""

from __future__ import annotations

import grpc
import pytest
from pydantic import ValidationError

from marketplace_platform.db import Fenced, NoWriter, fenced, writer_lost
from marketplace_platform.errors import DependencyUnavailable
from marketplace_platform.grpc_errors import status_code_for
from marketplace_platform.settings import ServiceSettings

MESSAGE = "fenced: this session writes as Region epoch 1, the fence is at epoch 2"


class Refusal(Exception):
    """A driver error as asyncpg raises it for the fence's SQLSTATE."""

    sqlstate = "MPF01"


def wrapped(cause: BaseException) -> BaseException:
    """A driver error as SQLAlchemy wraps it."""
    error = RuntimeError("(sqlalchemy.dialects.postgresql.asyncpg.Error) ...")
    error.__cause__ = cause
    return error


def test_region_epoch_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGION_EPOCH", raising=False)
    assert ServiceSettings().region_epoch == 1
    monkeypatch.setenv("REGION_EPOCH", "2")
    assert ServiceSettings().region_epoch == 2
    with pytest.raises(ValidationError, match="region_epoch"):
        ServiceSettings(region_epoch=0)


def test_a_refusal_by_the_fence_is_fenced_a_lost_writer_and_unavailable() -> None:
    refusal = fenced(wrapped(Refusal(MESSAGE)))
    assert isinstance(refusal, Fenced)
    assert str(refusal) == MESSAGE
    assert isinstance(refusal, DependencyUnavailable)
    assert isinstance(refusal, NoWriter)
    assert writer_lost(wrapped(Refusal(MESSAGE)))  # its pool is dropped
    assert status_code_for(refusal) == grpc.StatusCode.UNAVAILABLE


def test_other_failures_are_not_fenced() -> None:
    class Unique(Exception):
        sqlstate = "23505"

    assert fenced(wrapped(Unique("duplicate key"))) is None
    assert fenced(ValueError("a bug")) is None
