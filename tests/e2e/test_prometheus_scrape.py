"""A real Prometheus server (Debian's `prometheus`) scrapes the running stack: every process's
target is up, a cart call shows up as checkout_grpc_requests_total by method and code, the
outbox relay's database gauges and the gateway's HTTP series are there, and the alert rules
load."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from local_supervisor.embedded import free_port
from marketplace.cart.v1 import cart_service_pb2 as cart_pb
from marketplace.cart.v1 import cart_service_pb2_grpc as cart_grpc
from tests.support.stack import REPO, LaunchedStack

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="no `prometheus` binary (Debian's prometheus package; .ci/run installs it)",
    ),
]

RULES = REPO / "deploy" / "prometheus" / "rules.yml"
READY_WITHIN = 90.0
SERIES_WITHIN = 20.0
_TARGET = re.compile(r"(\S+)=http://([^/\s]+)/metrics")


def scrape_config(targets: dict[str, str]) -> dict[str, Any]:
    """Prometheus's configuration: every process a target labelled with its name, each second."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "checkout",
                "static_configs": [
                    {"targets": [address], "labels": {"process": name}}
                    for name, address in targets.items()
                ],
            }
        ],
    }


@contextlib.contextmanager
def prometheus(config: Path, data: Path) -> Iterator[str]:
    """A Prometheus server on a free port until the block ends; yields its base URL."""
    port = free_port("127.0.0.1")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(data.parent / "prometheus.log").open("wb"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def query(client: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    """The instant vector a PromQL query returns ([] while Prometheus is not answering yet)."""
    try:
        answer = await client.get("/api/v1/query", params={"query": promql})
    except httpx.TransportError:
        return []
    if answer.status_code != 200:
        return []
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


async def eventually(client: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    """The query's result once it is not empty; fails after SERIES_WITHIN seconds."""
    deadline = time.monotonic() + SERIES_WITHIN
    while True:
        result = await query(client, promql)
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"no series for {promql} within {SERIES_WITHIN:.0f}s")
        await asyncio.sleep(0.5)


async def test_prometheus_scrapes_the_running_stack(stack: LaunchedStack, tmp_path: Path) -> None:
    await stack.wait_for_line("all services SERVING", within=READY_WITHIN)
    targets = dict(_TARGET.findall(await stack.wait_for_line("metrics: ")))
    assert {"cart", "gateway", "outbox-relay", "saga-engine"} <= targets.keys()

    async with grpc.aio.insecure_channel(stack.grpc_address("cart")) as channel:
        cart = cart_grpc.CartServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cart.CreateCart(cart_pb.CreateCartRequest(idempotency_key=uuid.uuid4().hex))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets)))
    with prometheus(config, tmp_path / "tsdb") as url:
        async with httpx.AsyncClient(base_url=url, timeout=2.0) as client:
            up = await eventually(client, f"count(up == 1) == {len(targets)}")
            assert up, "every process's target is up"
            calls = await eventually(
                client,
                'checkout_grpc_requests_total{process="cart",'
                'method="/marketplace.cart.v1.CartService/CreateCart",code="INVALID_ARGUMENT"}',
            )
            assert float(calls[0]["value"][1]) >= 1
            latency = await eventually(
                client, 'checkout_grpc_request_duration_seconds_count{process="cart"}'
            )
            assert float(latency[0]["value"][1]) >= 1
            outbox = await eventually(client, 'checkout_outbox_unpublished{process="outbox-relay"}')
            assert {series["metric"]["schema"] for series in outbox} >= {"checkout"}
            assert await eventually(client, 'checkout_queue_messages{dlq="true"}')
            assert await eventually(client, 'checkout_http_requests_total{route="/readyz"}')

            rules = (await client.get("/api/v1/rules")).json()["data"]["groups"]
            loaded = {rule["name"] for group in rules for rule in group["rules"]}
            declared = {
                rule["alert"]
                for group in yaml.safe_load(RULES.read_text())["groups"]
                for rule in group["rules"]
            }
            assert loaded == declared
