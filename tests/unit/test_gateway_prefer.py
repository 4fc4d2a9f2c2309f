"""The `Prefer: wait` header as RFC 7240 reads it: found among other preferences and across
header lines, case-insensitive, quoted or not, capped at 10 seconds (and said so), and anything
malformed or unknown ignored rather than refused."""

from __future__ import annotations

import pytest

from gateway.prefer import MAX_WAIT_SECONDS, WaitPreference, wait_preference


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        (["wait=5"], 5),
        (["WAIT=3"], 3),
        (["wait = 4"], 4),
        (['wait="7"'], 7),
        (["respond-async, wait=2"], 2),
        (["return=minimal; foo=bar, wait=6; ignored=1"], 6),
        (["handling=lenient", "wait=8"], 8),  # a second header line
        (['note="a,wait=9;x", wait=2'], 2),  # separators inside a quoted string do not split
        (["wait=10"], 10),
    ],
)
def test_a_wait_is_found_among_the_preferences(headers: list[str], seconds: int) -> None:
    assert wait_preference(headers) == WaitPreference(seconds)


@pytest.mark.parametrize("asked", ["11", "60", "99999999999999999999999"])
def test_a_wait_above_ten_seconds_is_capped_and_applied_as_capped(asked: str) -> None:
    preference = wait_preference([f"wait={asked}"])
    assert preference == WaitPreference(MAX_WAIT_SECONDS)
    assert preference.applied == "wait=10"


def test_applied_names_the_wait_honoured() -> None:
    assert WaitPreference(3).applied == "wait=3"


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [""],
        ["respond-async"],
        ["handling=strict, return=representation"],
        ["wait"],
        ["wait="],
        ["wait=abc"],
        ["wait=1.5"],
        ["wait=-1"],
        ["wait=+3"],
        ["wait=\u0663"],  # a digit, but not an ASCII one
        ["wait=0"],  # nothing to wait for
        ["waiting=5"],
        ["wait=abc, wait=5"],  # only the first instance of a preference counts
    ],
)
def test_no_usable_wait_is_no_preference_and_never_an_error(headers: list[str]) -> None:
    assert wait_preference(headers) is None


def test_the_first_wait_wins() -> None:
    assert wait_preference(["wait=3, wait=9"]) == WaitPreference(3)
    assert wait_preference(["wait=4", "wait=1"]) == WaitPreference(4)
