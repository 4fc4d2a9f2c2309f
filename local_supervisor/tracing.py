"""Tracing for `make run`: every process exports its spans as OTLP/JSON lines in the data folder.

The files (<data_dir>/traces/<service>.jsonl, marketplace_platform.trace_files) need no
collector; OTEL_TRACES_EXPORTER and OTEL_TRACES_JSONL_DIR in the supervisor's own environment
win (OTEL_TRACES_EXPORTER=none turns tracing off), and the sampled share of new traces is
OTEL_TRACES_SAMPLER_ARG's default unless that is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def local_tracing(data_dir: Path, base_env: Mapping[str, str]) -> dict[str, str]:
    """The tracing settings the local stack's processes get."""
    return {
        "OTEL_TRACES_EXPORTER": base_env.get("OTEL_TRACES_EXPORTER", "jsonl"),
        "OTEL_TRACES_JSONL_DIR": base_env.get("OTEL_TRACES_JSONL_DIR", str(data_dir / "traces")),
    }
