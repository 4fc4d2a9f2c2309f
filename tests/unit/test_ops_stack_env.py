"""The local stack points each zone's gateway (its operator console) at the stack's database
and at the metrics endpoint of the payment process of its own zone (the PSP breaker)."""

from __future__ import annotations

from local_supervisor.stack import service_specs


def test_each_gateway_reads_the_database_and_its_zones_payment_metrics() -> None:
    specs = {
        spec.name: spec
        for spec in service_specs(
            base_port=6000, database_url="postgresql://db", redis_url="redis://r", replicas=2
        )
    }
    for zone in ("zone-a", "zone-b"):
        gateway = specs[f"gateway@{zone}"].env
        payment = specs[f"payment@{zone}"].env
        assert gateway["OPS_DATABASE_URL"] == "postgresql://db"
        assert gateway["OPS_PAYMENT_METRICS_URL"] == (
            f"http://127.0.0.1:{payment['METRICS_PORT']}/metrics"
        )
    assert (
        specs["gateway@zone-a"].env["OPS_PAYMENT_METRICS_URL"]
        != (specs["gateway@zone-b"].env["OPS_PAYMENT_METRICS_URL"])
    )
    assert not any(
        "OPS_DATABASE_URL" in spec.env for spec in specs.values() if "gateway" not in spec.name
    )
