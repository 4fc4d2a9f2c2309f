"""Replicas of the local stack, one per zone: names, ports, targets and settings of each, what
the supervisor's flags and environment say, and the file that holds a zone down."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.server import shared_socket
from local_supervisor.launcher import StackPorts
from local_supervisor.settings import SupervisorSettings, command_line, parse_options
from local_supervisor.stack import (
    STACK,
    ZONE_PORT_STRIDE,
    ports_in_use,
    replica_name,
    role_of,
    service_specs,
    service_targets,
    zone_name,
)
from local_supervisor.zones import clear_holds, held_zones, hold_zone, release_zone

BASE = 6000


def specs_by_name(replicas: int) -> dict[str, dict[str, str]]:
    specs = service_specs(
        base_port=BASE, database_url="postgresql://db", redis_url="redis://r", replicas=replicas
    )
    return {spec.name: dict(spec.env) for spec in specs}


def test_one_replica_keeps_the_names_ports_and_targets_of_the_stack() -> None:
    specs = service_specs(base_port=BASE, database_url="postgresql://db", redis_url="redis://r")

    assert [spec.name for spec in specs] == [entry.name for entry in STACK]
    assert service_targets(base_port=BASE)["CHECKOUT_TARGET"] == "127.0.0.1:6003"
    by_name = {spec.name: spec for spec in specs}
    assert by_name["checkout"].env["ZONE"] == "zone-a"
    assert by_name["checkout"].zone == "zone-a"
    assert by_name["psp"].zone is None
    assert "ZONE" not in by_name["psp"].env
    assert by_name["checkout"].env["DB_POOL_SIZE"] == "5"
    assert "GATEWAY_REUSE_PORT" not in by_name["gateway"].env


def test_every_replicated_process_runs_once_per_zone_and_the_psp_once() -> None:
    env = specs_by_name(3)
    roles = [entry.name for entry in STACK if entry.name != "psp"]

    expected = {f"{role}@zone-{zone}" for role in roles for zone in "abc"} | {"psp"}
    assert set(env) == expected
    for name, settings in env.items():
        if name != "psp":
            assert settings["ZONE"] == name.partition("@")[2]
            assert settings["SERVICE_NAME"] == role_of(name)


def test_each_grpc_replica_listens_on_its_zones_port_and_callers_get_every_replica() -> None:
    env = specs_by_name(2)

    assert env["checkout@zone-a"]["GRPC_PORT"] == str(BASE + 3)
    assert env["checkout@zone-b"]["GRPC_PORT"] == str(BASE + 3 + ZONE_PORT_STRIDE)
    targets = service_targets(base_port=BASE, replicas=2)
    assert targets["CHECKOUT_TARGET"] == f"127.0.0.1:{BASE + 3},127.0.0.1:{BASE + 103}"
    assert env["gateway@zone-b"]["CHECKOUT_TARGET"] == targets["CHECKOUT_TARGET"]
    ports = StackPorts(BASE, {"gateway": BASE + 10, "psp": BASE + 11})
    assert ports.grpc_address("checkout", zone_index=1) == f"127.0.0.1:{BASE + 103}"


def test_every_zones_gateway_shares_the_one_port() -> None:
    env = specs_by_name(2)

    assert env["gateway@zone-a"]["GATEWAY_PORT"] == env["gateway@zone-b"]["GATEWAY_PORT"]
    assert env["gateway@zone-a"]["GATEWAY_REUSE_PORT"] == "true"


def test_replicas_share_the_database_connections_of_one() -> None:
    env = specs_by_name(2)

    assert env["checkout@zone-a"]["DB_POOL_SIZE"] == "2"  # 5 // 2
    assert env["email@zone-b"]["DB_POOL_SIZE"] == "1"  # 2 // 2
    assert specs_by_name(3)["outbox-relay@zone-c"]["DB_POOL_SIZE"] == "1"  # never 0


def test_names_zones_and_roles() -> None:
    assert [zone_name(i) for i in range(3)] == ["zone-a", "zone-b", "zone-c"]
    assert replica_name("checkout", "zone-b", 2) == "checkout@zone-b"
    assert replica_name("checkout", "zone-a", 1) == "checkout"
    assert role_of("checkout@zone-b") == role_of("checkout") == "checkout"
    with pytest.raises(ValueError, match="no zone"):
        zone_name(26)


def test_replicas_come_from_the_flag_or_the_environment(tmp_path: Path) -> None:
    argv = command_line(
        data_dir=tmp_path, base_port=31000, http_ports={"gateway": 31010, "psp": 31011},
        replicas=2,
    )  # fmt: skip

    assert parse_options(argv, SupervisorSettings()).replicas == 2
    assert parse_options([], SupervisorSettings()).replicas == 1
    assert parse_options([], SupervisorSettings(replicas=3)).replicas == 3
    with pytest.raises(SystemExit):
        parse_options(["--replicas", "0"], SupervisorSettings())


def test_every_zones_ports_are_checked_before_the_start() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        base = port - 3 - ZONE_PORT_STRIDE  # checkout@zone-b's port is taken
        http = {"gateway": 1, "psp": 2}
        assert "checkout@zone-b" in " ".join(
            ports_in_use(base_port=base, http_ports=http, replicas=2,
                         entries=tuple(e for e in STACK if e.port_offset is not None))
        )  # fmt: skip


def test_zones_are_held_and_released_in_one_file(tmp_path: Path) -> None:
    holds = tmp_path / "run" / "held-zones"

    assert held_zones(holds) == frozenset()
    hold_zone(holds, "zone-a")
    hold_zone(holds, "zone-b")
    assert held_zones(holds) == {"zone-a", "zone-b"}
    release_zone(holds, "zone-a")
    assert held_zones(holds) == {"zone-b"}
    clear_holds(holds)
    assert held_zones(holds) == frozenset()


def test_every_zones_gateway_binds_the_one_port() -> None:
    with shared_socket("127.0.0.1", 0) as first:
        port = first.getsockname()[1]
        first.listen()
        with shared_socket("127.0.0.1", port) as second:
            second.listen()
            assert second.getsockname() == first.getsockname()


def test_each_zone_adds_to_the_wait_for_the_stack_to_be_ready() -> None:
    one = parse_options([], SupervisorSettings()).ready_timeout
    assert parse_options(["--replicas", "2"], SupervisorSettings()).ready_timeout == 2 * one
    assert (
        parse_options(
            ["--replicas", "2", "--ready-timeout", "5"], SupervisorSettings()
        ).ready_timeout
        == 5
    )
