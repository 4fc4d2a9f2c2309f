"""Writing the generated templates (registry, services, events) as JSON files."""

from __future__ import annotations

import json
from pathlib import Path

from .deployables import present_deployables
from .events import read_event_rules, render_events
from .paths import EVENT_RULES, REPO
from .payment_account import render_payment_account
from .registry import render_registry
from .services import render_services


def render_generated(out: Path, repo: Path = REPO) -> dict[str, Path]:
    """Write the generated templates into `out`; their paths by template name."""
    out.mkdir(parents=True, exist_ok=True)
    deployables = present_deployables(repo)
    rules = read_event_rules(repo / EVENT_RULES.relative_to(REPO))
    rendered = {
        "registry": render_registry(deployables),
        "services": render_services(deployables, rules),
        "events": render_events(rules),
        "payment-account": render_payment_account(deployables, rules),
    }
    paths = {}
    for name, template in rendered.items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(template, indent=2, sort_keys=False) + "\n")
        paths[name] = path
    return paths
