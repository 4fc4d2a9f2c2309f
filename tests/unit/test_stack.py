"""The local stack's table: every process learns where every gRPC service listens; the
launcher starts the supervisor with what the supervisor reads (flags, environment, state file)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from local_supervisor.launcher import free_ports, launch_env, stack_pids
from local_supervisor.processes import ProcessSpec
from local_supervisor.settings import SupervisorSettings, command_line, parse_options
from local_supervisor.stack import (
    DEFAULT_HTTP_PORTS,
    STACK,
    metrics_line,
    ports_in_use,
    service_specs,
    service_targets,
)
from local_supervisor.state_file import ProcessState, read_state, state_file_path, write_state


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


def test_a_stack_given_an_external_psp_calls_it_and_starts_no_simulator() -> None:
    outside = "http://127.0.0.1:39999"
    specs = service_specs(
        base_port=6000, database_url="postgresql://db", redis_url="redis://r", psp_url=outside
    )
    own = service_specs(base_port=6000, database_url="postgresql://db", redis_url="redis://r")

    assert [spec.name for spec in specs] == [e.name for e in STACK if e.name != "psp"]
    assert {spec.env["PSP_URL"] for spec in specs} == {outside}
    assert {spec.env["PSP_URL"] for spec in own} == {"http://127.0.0.1:8089"}


def test_the_launchers_psp_url_and_skip_migrate_reach_the_supervisor(tmp_path: Path) -> None:
    argv = command_line(
        data_dir=tmp_path, base_port=31000, http_ports=DEFAULT_HTTP_PORTS,
        psp_url="http://127.0.0.1:39999", skip_migrate=True,
    )  # fmt: skip

    options = parse_options(argv, SupervisorSettings())
    assert (options.psp_url, options.skip_migrate) == ("http://127.0.0.1:39999", True)
    default = parse_options([], SupervisorSettings())
    assert (default.psp_url, default.skip_migrate) == (None, False)


def test_the_launchers_command_line_is_what_the_supervisor_reads(tmp_path: Path) -> None:
    argv = command_line(
        data_dir=tmp_path, base_port=31000, http_ports={"gateway": 31010, "psp": 31011},
        ready_timeout=90.5,
    )  # fmt: skip

    options = parse_options(argv, SupervisorSettings(database_url="postgresql://db"))

    assert options.data_dir == tmp_path.resolve()
    assert (options.base_port, dict(options.http_ports)) == (
        31000,
        {"gateway": 31010, "psp": 31011},
    )
    assert options.ready_timeout == 90.5
    assert options.state_file == state_file_path(tmp_path.resolve())
    default = parse_options(
        command_line(data_dir=tmp_path, base_port=31000, http_ports=DEFAULT_HTTP_PORTS),
        SupervisorSettings(),
    )
    assert default.ready_timeout == parse_options([], SupervisorSettings()).ready_timeout


def test_the_launchers_environment_says_which_stores_to_use() -> None:
    base = {"REDIS_URL": "redis://mine", "DATABASE_URL": "postgresql://old", "HOME": "/h"}

    inherited = launch_env(database_url="postgresql://db", settings={"A": "1"}, base=base)
    embedded = launch_env(database_url=None, redis_url=None, base=base)
    given = launch_env(database_url="postgresql://db", redis_url="redis://r", base=base)

    assert inherited == {
        "REDIS_URL": "redis://mine", "DATABASE_URL": "postgresql://db", "HOME": "/h",
        "PYTHONUNBUFFERED": "1", "A": "1",
    }  # fmt: skip
    assert {"REDIS_URL", "DATABASE_URL"}.isdisjoint(embedded)
    assert given["REDIS_URL"] == "redis://r"


def test_free_ports_are_free_and_name_each_process() -> None:
    ports = free_ports(random.Random(7))

    assert ports_in_use(base_port=ports.base_port, http_ports=ports.http_ports) == []
    assert ports.grpc_address("checkout") == f"127.0.0.1:{ports.base_port + 3}"
    assert ports.url("gateway") == f"http://127.0.0.1:{ports.http_ports['gateway']}"
    assert free_ports(random.Random(7)) == ports  # a seeded pick is repeatable
    with pytest.raises(ValueError, match="no gRPC port"):
        ports.grpc_address("gateway")


def test_the_launcher_reads_pids_from_the_supervisors_state_file(tmp_path: Path) -> None:
    assert stack_pids(tmp_path) == {}  # before the supervisor wrote it

    processes = [ProcessState("cart", 41, "127.0.0.1:1", 0), ProcessState("email", None, None, 2)]
    write_state(state_file_path(tmp_path), processes=processes, resources={})

    assert stack_pids(tmp_path) == {"cart": 41, "email": None}
    assert read_state(state_file_path(tmp_path)) == processes


def test_every_process_but_the_psp_gets_a_metrics_port_of_its_own_and_one_relay_the_gauges() -> (
    None
):
    specs = service_specs(
        base_port=6000, database_url="postgresql://db", redis_url="redis://r", replicas=2
    )
    ports = {spec.name: spec.env.get("METRICS_PORT") for spec in specs}

    assert ports.pop("psp") is None
    assert None not in ports.values()
    assert len(set(ports.values())) == len(ports)
    assert "metrics: cart@zone-a=http://127.0.0.1:" in metrics_line(specs)
    relays = {s.name: s.env.get("RELAY_DB_GAUGES") for s in specs if "outbox-relay" in s.name}
    assert relays == {"outbox-relay@zone-a": None, "outbox-relay@zone-b": "false"}


def kernel_ephemeral_ports() -> range:
    """The ports Linux hands out for outgoing connections and binds to port 0."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def stack_ports(specs: list[ProcessSpec]) -> set[int]:
    """Every port a stack's processes listen on: gRPC, HTTP and metrics."""
    names = ("GRPC_PORT", "GATEWAY_PORT", "PSP_PORT", "METRICS_PORT")
    return {int(spec.env[name]) for spec in specs for name in names if spec.env.get(name)}


@pytest.mark.skipif(
    not Path("/proc/sys/net/ipv4/ip_local_port_range").exists(), reason="Linux only"
)
@pytest.mark.parametrize("replicas", [1, 3])
def test_a_free_stack_listens_on_no_port_the_kernel_may_hand_out(replicas: int) -> None:
    # Between the launcher's probe and a process's bind, any outgoing connection (to
    # PostgreSQL, Redis, another service) may take an ephemeral port as its own: a stack port
    # in that range can be found taken, and the gateway restarts on EADDRINUSE until the
    # launcher gives up (CI: "[Errno 98] ... ('127.0.0.1', 38602): address already in use").
    ephemeral = kernel_ephemeral_ports()
    for seed in range(200):
        ports = free_ports(random.Random(seed), replicas=replicas)
        specs = service_specs(
            base_port=ports.base_port, http_ports=ports.http_ports, replicas=replicas,
            database_url="postgresql://db", redis_url="redis://r",
        )  # fmt: skip
        listening = stack_ports(specs)
        assert not [port for port in listening if port in ephemeral], seed


def test_a_metrics_port_already_taken_is_found_before_the_stack_starts() -> None:
    specs = service_specs(base_port=6000, database_url="postgresql://db", redis_url="redis://r")
    relay = next(spec for spec in specs if spec.name == "outbox-relay")
    port = int(relay.env["METRICS_PORT"])

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        taken = ports_in_use(base_port=6000)

    assert taken == [f"outbox-relay metrics ({port})"]
    assert (
        service_specs(base_port=6000, database_url="postgresql://db", redis_url="redis://r")
        == specs
    )  # the same ports every time: the probe checks what the processes will bind
