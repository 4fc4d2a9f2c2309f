"""Errors as Step Functions names them, raised while interpreting a state."""

from __future__ import annotations

ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
RUNTIME = "States.Runtime"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
BRANCH_FAILED = "States.BranchFailed"


class StatesError(Exception):
    """A state's failure with its Step Functions error name and cause."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


class InvalidDefinition(ValueError):
    """The state machine definition is not something this interpreter can run."""


def matches(error_equals: list[str], error: str) -> bool:
    """Whether a Retry or Catch `ErrorEquals` list covers `error`, with Step Functions' rules."""
    if error == RUNTIME:
        # Step Functions never retries or catches States.Runtime, not even with States.ALL.
        return False
    for name in error_equals:
        if name in (error, ALL):
            return True
        if name == TASK_FAILED and error != TIMEOUT:
            return True
    return False
