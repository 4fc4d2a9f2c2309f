"""The zone drill's own figures: answers counted in the phase they came in, phase bounds, and
each phase's rates."""

from __future__ import annotations

from pathlib import Path

from verification.drill_zone import (
    AFTER,
    BEFORE,
    DOWN,
    RETURNING,
    PhasedTraffic,
    PhaseFigures,
    ZoneLoss,
    parse_options,
    replay_command,
)


def test_answers_count_in_the_phase_they_came_in_and_overall() -> None:
    traffic = PhasedTraffic()
    traffic.saw("202")
    traffic.phase = DOWN
    for kind in ("202", "503", "connection error", "timeout", "timeout", "409"):
        traffic.saw(kind)

    assert traffic.answers["202"] == 2
    assert traffic.failures(BEFORE) == (0, 0, 0)
    assert traffic.failures(DOWN) == (1, 1, 2)  # 5xx, connection errors, timeouts


def test_each_phase_ends_where_the_next_begins() -> None:
    loss = ZoneLoss("zone-a", starts={BEFORE: 10.0, DOWN: 20.0, RETURNING: 50.0, AFTER: 55.0})
    loss.ended_at = 80.0

    assert list(loss.bounds()) == [
        (BEFORE, 10.0, 20.0), (DOWN, 20.0, 50.0), (RETURNING, 50.0, 55.0), (AFTER, 55.0, 80.0),
    ]  # fmt: skip


def test_a_phases_rates() -> None:
    figures = PhaseFigures(
        phase=DOWN, seconds=20.0, orders=50, confirmed=40, requests=200,
        server_errors=2, connection_errors=3, timeouts=5,
    )  # fmt: skip

    assert figures.orders_per_second == 2.5
    assert figures.failed == 10
    assert figures.error_rate == 0.05


def test_the_printed_command_runs_the_same_drill(tmp_path: Path) -> None:
    options = parse_options(["--seed", "5", "--zone", "zone-b", "--down-seconds", "7",
                             "--data-dir", str(tmp_path)])  # fmt: skip

    again = parse_options([*replay_command(options).split()[3:], "--data-dir", str(tmp_path)])
    assert again == options
