"""Paths, Parameters/ResultSelector templates, intrinsic functions and choice rules."""

from __future__ import annotations

from typing import Any

import pytest

from workers.saga_engine.asl import choice, intrinsics, paths
from workers.saga_engine.asl.errors import RESULT_PATH_MATCH_FAILURE, RUNTIME, StatesError

DATA = {"order": {"id": "o-1", "lines": [{"sku": "MUG-1", "quantity": 2}]}, "total": 1200}
CONTEXT = {"Execution": {"Name": "o-1", "Input": {"a": 1}}, "State": {"EnteredTime": "T"}}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", DATA),
        ("$.total", 1200),
        ("$.order.id", "o-1"),
        ("$.order.lines[0].sku", "MUG-1"),
        ("$['order']['lines'][0]['quantity']", 2),
        ("$$.Execution.Name", "o-1"),
        ("$$.Execution.Input", {"a": 1}),
        ("$$.State.EnteredTime", "T"),
    ],
)
def test_read_follows_the_supported_path_subset(path: str, expected: Any) -> None:
    assert paths.read(path, DATA, CONTEXT) == expected


@pytest.mark.parametrize("path", ["$.missing", "$.order.lines[3]", "$.total.x", "order"])
def test_read_of_a_missing_or_bad_path_is_a_runtime_error(path: str) -> None:
    with pytest.raises(StatesError) as failure:
        paths.read(path, DATA, CONTEXT)
    assert failure.value.error == RUNTIME


def test_write_places_the_result_without_touching_the_input() -> None:
    data = {"order": {"id": "o-1"}}
    written = paths.write("$.order.tax.amount", data, 80)
    assert written == {"order": {"id": "o-1", "tax": {"amount": 80}}}
    assert data == {"order": {"id": "o-1"}}
    assert paths.write("$", data, 5) == 5
    assert paths.write(None, data, 5) is data


def test_write_through_a_non_object_is_a_result_path_match_failure() -> None:
    with pytest.raises(StatesError) as failure:
        paths.write("$.total.tax", DATA, 1)
    assert failure.value.error == RESULT_PATH_MATCH_FAILURE


def test_render_reads_paths_and_functions_and_keeps_literals() -> None:
    template = {
        "order_id.$": "$.order.id",
        "name.$": "$$.Execution.Name",
        "static": {"nested": [1, "$.not-a-path-without-suffix"]},
        "label.$": "States.Format('order {} total {}', $.order.id, $.total)",
        "pair.$": "States.Array($.total, 'x', true, null)",
    }
    assert intrinsics.render(template, DATA, CONTEXT) == {
        "order_id": "o-1",
        "name": "o-1",
        "static": {"nested": [1, "$.not-a-path-without-suffix"]},
        "label": "order o-1 total 1200",
        "pair": [1200, "x", True, None],
    }


def test_intrinsic_functions_compose() -> None:
    data = {"text": '{"a": [1, 2]}', "n": 41}
    assert intrinsics.evaluate("States.StringToJson($.text)", data, {}) == {"a": [1, 2]}
    assert intrinsics.evaluate("States.JsonToString($.n)", data, {}) == "41"
    assert intrinsics.evaluate("States.MathAdd($.n, 1)", data, {}) == 42
    assert (
        intrinsics.evaluate("States.Format('{} \\'q\\'', States.MathAdd($.n, -1))", data, {})
        == "40 'q'"
    )
    assert len(intrinsics.evaluate("States.UUID()", data, {})) == 36


def test_a_wrong_intrinsic_argument_is_an_intrinsic_failure() -> None:
    with pytest.raises(StatesError) as failure:
        intrinsics.evaluate("States.MathAdd($.text, 1)", {"text": "x"}, {})
    assert failure.value.error == "States.IntrinsicFailure"


@pytest.mark.parametrize(
    ("rule", "holds"),
    [
        ({"Variable": "$.order.id", "StringEquals": "o-1"}, True),
        ({"Variable": "$.total", "NumericGreaterThan": 1000}, True),
        ({"Variable": "$.total", "NumericLessThanEquals": 1199}, False),
        ({"Variable": "$.total", "NumericEquals": 1200}, True),
        ({"Variable": "$.total", "StringEquals": "1200"}, False),
        ({"Variable": "$.flag", "BooleanEquals": False}, True),
        ({"Variable": "$.gone", "IsPresent": False}, True),
        ({"Variable": "$.nothing", "IsNull": True}, True),
        ({"Variable": "$.total", "NumericEqualsPath": "$.same"}, True),
        (
            {
                "And": [
                    {"Variable": "$.total", "NumericGreaterThanEquals": 1200},
                    {"Not": {"Variable": "$.flag", "BooleanEquals": True}},
                ]
            },
            True,
        ),
        (
            {
                "Or": [
                    {"Variable": "$.gone", "IsPresent": True},
                    {"Variable": "$.order.id", "StringEquals": "o-2"},
                ]
            },
            False,
        ),
    ],
)
def test_choice_rules(rule: dict[str, Any], holds: bool) -> None:
    data = {**DATA, "flag": False, "nothing": None, "same": 1200}
    assert choice.evaluate(rule, data, CONTEXT) is holds


def test_choose_falls_back_to_default_and_a_missing_variable_is_a_runtime_error() -> None:
    state = {"Choices": [{"Variable": "$.total", "NumericLessThan": 5, "Next": "Small"}]}
    assert choice.choose({**state, "Default": "Big"}, DATA, CONTEXT) == "Big"
    assert choice.choose(state, DATA, CONTEXT) is None
    with pytest.raises(StatesError):
        choice.evaluate({"Variable": "$.gone", "StringEquals": "x"}, DATA, CONTEXT)
