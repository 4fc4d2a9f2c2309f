"""The chaos run's figures: a tiny synthetic run gives its JSON and a valid PNG next to it."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from verification.chaos_plot import figures, write_report


def test_a_small_run_writes_its_json_and_a_png(tmp_path: Path) -> None:
    report = figures(
        seed=7,
        samples=[(0.5, 1), (1.0, 2), (2.0, 3), (3.5, 4)],
        kills=[(0.5, "orders", 4242)],
        phases=[("no PSP faults yet", 0, 2), ("{'latency_ms': 30000} (outage)", 1, 2)],
    )
    json_path, png_path = tmp_path / "chaos.json", tmp_path / "chaos.png"
    write_report(report, json_path, png_path)

    assert json.loads(json_path.read_text())["phases"][1] == {
        "phase": "{'latency_ms': 30000} (outage)", "timed_out": 1, "placed": 2,
    }  # fmt: skip
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png_path) as image:
        image.verify()
        assert image.format == "PNG"
        assert image.size[0] > 500
