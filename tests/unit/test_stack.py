"""The local stack's table: every process learns where every gRPC service listens."""

from __future__ import annotations

from local_supervisor.stack import STACK, service_specs, service_targets


def test_each_grpc_service_gets_a_target_on_its_own_port() -> None:
    targets = service_targets(base_port=6000)

    assert targets["CART_TARGET"] == "127.0.0.1:6000"
    assert targets["INVENTORY_TARGET"] == "127.0.0.1:6001"
    assert targets["PAYMENT_TARGET"] == "127.0.0.1:6002"
    assert targets["CHECKOUT_TARGET"] == "127.0.0.1:6003"
    assert len(set(targets.values())) == len(targets)
    assert "PSP_TARGET" not in targets  # the PSP is HTTP, reached through PSP_URL


def test_every_process_is_told_the_targets() -> None:
    specs = service_specs(base_port=6000, database_url="postgresql://db", redis_url="redis://r")

    assert [spec.name for spec in specs] == [entry.name for entry in STACK]
    for spec in specs:
        assert spec.env["CHECKOUT_TARGET"] == "127.0.0.1:6003", spec.name
