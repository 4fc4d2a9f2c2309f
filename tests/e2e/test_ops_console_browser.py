"""The operator console in a real browser (Debian's Chromium driven by Playwright) on the running
stack with tracing on: a customer's token is refused; an admin signs in, finds an order placed
through the public API, sees its timeline, its saga path on the state machine and its trace
across services; a dead letter put on a DLQ through the queue port is inspected and re-driven
from the queues panel, and the queue port sees it back on its source queue; a parked saga
execution, opened from its alarm, is re-driven with its button and runs to its end.

Screenshots of every step go to $TEST_ARTIFACTS_DIR/ops-console (build/artifacts/ops-console by
default). Without /usr/bin/chromium or the playwright package the test skips, and fails under CI
(`CI` set), where .ci/run installs both."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth import ADMIN_SCOPE, issue_token
from gateway.settings import DEV_JWT_SECRET
from marketplace_platform.db import create_engine
from marketplace_platform.queues import Queues
from marketplace_platform.queues.definitions import load_queue_definitions
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.saga.tables import executions
from marketplace_platform.settings import ServiceSettings
from tests.integration.test_ops_redrive import Gate, parked_execution, parking_engine
from tests.support import shopper
from tests.support.stack import REPO, LaunchedStack, running_stack

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

# A database of the module's own: the alarms it sees firing are its own doing, and the dead
# letter it redrives (an event for no order) is not left to other modules' queues.
pytestmark = [pytest.mark.stack, pytest.mark.own_database, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SETTLES_WITHIN = 60.0  # the saga's end, the trace's spans in their files, the page's reloads
SOURCE_QUEUE = "shipping"
# A message the shipping consumer cannot decode (its detail is no envelope): once re-driven it is
# received, fails and stays on the queue, backing off, instead of being handled and deleted.
DEAD_LETTER_DETAIL_TYPE = "ops-console.browser-test"
DLQ_ALARM = "CheckoutDeadLetterQueueNotEmpty"
PARKED_ALARM = "CheckoutCompensationParked"


def artifacts_dir() -> Path:
    """Where the screenshots go, emptied of a previous run's: $TEST_ARTIFACTS_DIR/ops-console,
    else build/artifacts/ops-console."""
    root = os.environ.get("TEST_ARTIFACTS_DIR")
    folder = Path(root) / "ops-console" if root else REPO / "build" / "artifacts" / "ops-console"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):  # a previous run's
        stale.unlink()
    return folder


def require_browser() -> None:
    """Skip without Chromium or Playwright; under CI, where both are installed, fail."""
    missing = [
        what
        for what, present in (
            (f"{CHROMIUM} (Debian's chromium package)", CHROMIUM.exists()),
            ("the playwright package (make install)", importlib.util.find_spec("playwright")),
        )
        if not present
    ]
    if not missing:
        return
    reason = f"the browser test needs {' and '.join(missing)}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs both")
    pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def traced_stack(module_database_url: str, tmp_path: Path) -> AsyncIterator[LaunchedStack]:
    settings = {
        "OTEL_TRACES_EXPORTER": "jsonl",
        "OTEL_TRACES_JSONL_DIR": str(tmp_path / "traces"),
        "OTEL_TRACES_SAMPLER_ARG": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: batches reach the files soon after the spans end
    }
    async with running_stack(module_database_url, tmp_path / "stack", settings) as stack:
        await stack.wait_for_line("all services SERVING", within=90)
        yield stack


@pytest.fixture
async def stack_engine(module_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the stack's database."""
    engine = create_engine(ServiceSettings(database_url=module_database_url))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def queues(stack_engine: AsyncEngine) -> Queues:
    """The stack's queues through the queue port (its PostgreSQL adapter)."""
    return PostgresQueues(
        stack_engine, load_queue_definitions(REPO / "deploy/ecs/event_rules.json")
    )


def token(subject: str, *scopes: str) -> str:
    """A development token, as `python -m gateway.dev_token` prints it."""
    return issue_token(secret=DEV_JWT_SECRET, subject=subject, scopes=scopes)


async def placed_order(gateway: str) -> tuple[str, str]:
    """An order of 2 of a new SKU (5 on hand) checked out through the public API and confirmed;
    its id and the SKU."""
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        sku = await shopper.stocked_sku(http, on_hand=5, price_minor=1250)
        cart_id = await shopper.cart_holding(http, customer, sku, 2)
        answer = await shopper.check_out(http, customer, cart_id, "pm_card_visa", uuid.uuid4().hex)
        assert answer.status_code in (200, 201, 202), answer.text
        order_id: str = answer.json()["order_id"]
        order = await shopper.settled(http, customer, order_id)
        assert order["status"] in ("CONFIRMED", "SHIPPED"), order
    return order_id, sku


# What the order detail shows, read from the page's DOM in one go.
_DETAIL_JS = """() => {
  const all = (selector) => [...document.querySelectorAll(selector)];
  const states = (cls) => all(`#saga-diagram g.state${cls}`);
  return {
    timeline: all('#timeline .timeline-row').map((row) => row.dataset.source),
    states: states('').length,
    visited: states('.visited').map((g) => g.dataset.state),
    failed: states('.failed').map((g) => g.dataset.state),
    terminal: states('.visited').filter((g) => ['Succeed', 'Fail'].includes(g.dataset.type))
      .map((g) => g.dataset.state),
    status: document.getElementById('saga-diagram').dataset.status || null,
    services: [...new Set(all('#trace-waterfall .span-row').map((row) => row.dataset.service))],
    spans: all('#trace-waterfall .span-row').length,
  };
}"""


def _detail_lacks(detail: dict[str, Any]) -> list[str]:
    """What the order's detail does not show yet of a finished, traced checkout."""
    wanted = {
        "timeline rows from the order and the saga": {"order", "saga"} <= set(detail["timeline"]),
        "a state machine of several states": detail["states"] >= 5,
        "the saga's first state visited": "CheckOrder" in detail["visited"],
        "a terminal state reached": bool(detail["terminal"]),
        "the execution stopped": detail["status"] not in (None, "RUNNING"),
        "spans from more than one service": len(detail["services"]) > 1,
    }
    return [what for what, shown in wanted.items() if not shown]


async def shown_detail(page: Page) -> dict[str, Any]:
    """The order detail once it shows everything `_detail_lacks` asks, reloading it meanwhile
    (the saga may still be finishing, the spans still on their way to their files)."""
    detail: dict[str, Any] = {}
    try:
        async with asyncio.timeout(SETTLES_WITHIN):
            while True:
                detail = await page.evaluate(_DETAIL_JS)
                if not _detail_lacks(detail):
                    return detail
                async with page.expect_response(lambda r: "/ops/api/orders/" in r.url):
                    await page.click("#order-refresh")
                await page.wait_for_load_state("networkidle")
    except TimeoutError:
        pytest.fail(f"the order detail still lacks {_detail_lacks(detail)}: {detail}")


async def test_operator_console_in_a_browser(
    traced_stack: LaunchedStack, stack_engine: AsyncEngine, queues: Queues, browser: Browser
) -> None:
    from playwright.async_api import expect

    gateway = traced_stack.url("gateway").rstrip("/")
    shots = artifacts_dir()
    order_id, sku = await placed_order(gateway)

    page = await browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    requested: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(f"{gateway}/ops")

    # A customer's token: refused with the API's problem detail, no panel shown.
    await page.fill("#token", token("cust-not-an-operator"))
    await page.click("#sign-in")
    await expect(page.locator("#auth-error")).to_be_visible()
    await expect(page.locator("#auth-error")).not_to_be_empty()
    for panel in ("orders", "queues", "stock", "alarms"):
        await expect(page.locator(f"#panel-{panel}")).to_be_hidden()
    await page.screenshot(path=shots / "01-customer-refused.png", full_page=True)

    # The admin signs in and finds the order by its id.
    await page.fill("#token", token("ops-console-test", ADMIN_SCOPE))
    await page.click("#sign-in")
    await expect(page.locator("#panel-orders")).to_be_visible()
    await expect(page.locator("#auth-error")).to_be_hidden()
    await page.fill("#order-search", order_id)
    await page.click("#order-search-go")
    row = page.locator(f".order-row[data-order-id='{order_id}']")
    await expect(row).to_have_count(1)
    await row.click()
    await expect(page.locator("#order-detail")).to_be_visible()
    await expect(page.locator("#order-title")).to_have_text(order_id)

    detail = await shown_detail(page)
    assert not detail["failed"], detail
    for state in ("CheckOrder", "ReserveInventory", "AuthorizePayment", "ConfirmOrder"):
        assert state in detail["visited"], detail
    assert "OrderConfirmed" in detail["terminal"], detail
    assert "gateway" in detail["services"], detail
    await expect(page.locator("#trace-waterfall .span-row[data-span-name]").first).to_be_visible()
    await page.screenshot(path=shots / "02-order-detail.png", full_page=True)
    await page.locator("#saga-diagram").screenshot(path=shots / "03-saga-diagram.png")
    await page.locator("#trace-waterfall").screenshot(path=shots / "04-trace-waterfall.png")

    # A dead letter on shipping's DLQ, through the queue port; inspected, then re-driven.
    dlq = next(d.dead_letter_queue for d in queues.definitions() if d.name == SOURCE_QUEUE)
    body = json.dumps({"detail-type": DEAD_LETTER_DETAIL_TYPE, "detail": "not an envelope"})
    message_id = await queues.send(dlq, body)
    # Its alarm fires (the console does not wait out the rule's `for:`), listed first, and
    # links to the queues panel.
    await page.click(".tab[data-panel=alarms]")
    alarm = page.locator(f".alarm-row[data-alarm='{DLQ_ALARM}']")
    await expect(alarm).to_have_class(re.compile(r"\bfiring\b"))
    firing = await page.eval_on_selector_all(
        ".alarm-row", "rows => rows.map(row => row.classList.contains('firing'))"
    )
    assert len(firing) >= 5, firing  # one per rule of deploy/prometheus/rules.yml
    assert firing == sorted(firing, reverse=True), firing
    await page.screenshot(path=shots / "05-alarm-firing.png", full_page=True)
    await alarm.locator("a").click()
    await expect(page.locator("#panel-queues")).to_be_visible()
    queue_row = page.locator(f".queue-row[data-queue='{SOURCE_QUEUE}']")
    await expect(queue_row).to_be_visible()
    await queue_row.locator(".dlq-inspect").click()
    dead_letter = page.locator(f"#dlq-messages .dlq-message[data-message-id='{message_id}']")
    await expect(dead_letter).to_be_visible()
    await expect(dead_letter).to_contain_text(DEAD_LETTER_DETAIL_TYPE)
    await page.screenshot(path=shots / "06-dead-letter-inspected.png", full_page=True)

    confirmations: list[str] = []

    async def accept(dialog: Any) -> None:
        confirmations.append(dialog.message)
        await dialog.accept()

    page.once("dialog", accept)
    async with page.expect_response(lambda r: r.url.endswith("/redrive")) as redrive:
        await queue_row.locator(".dlq-redrive").click()
    assert (await redrive.value).status == 200
    # Back on its source queue the consumer receives it, fails and hides it for a while: peek
    # sees in-flight messages too. Checked at once, before its receives could send it back.
    on_source = {
        message.message_id for message in await queues.peek(SOURCE_QUEUE, max_messages=500)
    }
    still_dead = {message.message_id for message in await queues.peek(dlq, max_messages=500)}
    assert message_id in on_source
    assert message_id not in still_dead
    assert len(confirmations) == 1
    assert dlq in confirmations[0]
    await expect(page.locator("#ops-status")).to_contain_text("Re-drove")
    await expect(page.locator("#ops-status")).to_contain_text(SOURCE_QUEUE)
    await page.screenshot(path=shots / "07-dead-letter-redriven.png", full_page=True)

    # The SKU's stock: 2 of 5 sold, nothing still held for the confirmed order.
    await page.click(".tab[data-panel=stock]")
    await page.fill("#stock-search", sku)
    await page.click("#stock-search-go")
    stock_row = page.locator(f".stock-row[data-sku='{sku}']")
    await expect(stock_row).to_have_count(1)
    cells = await stock_row.locator(":scope > td").all_inner_texts()
    assert cells[1:4] == ["3", "0", "3"], cells  # on hand, reserved, available
    await page.screenshot(path=shots / "08-stock.png", full_page=True)

    # A parked execution (a machine of the test's own, which no engine of the stack runs): its
    # alarm opens it, its failed task is red with its retry, and it is re-driven from there.
    machine = f"machine-{uuid.uuid4().hex[:8]}"
    gate = Gate()
    name = await parked_execution(stack_engine, machine, gate)
    await page.click(".tab[data-panel=alarms]")
    parked_alarm = page.locator(f".alarm-row[data-alarm='{PARKED_ALARM}']")
    await expect(parked_alarm).to_have_class(re.compile(r"\bfiring\b"))
    await parked_alarm.locator("a").click()
    diagram = page.locator("#saga-diagram")
    await expect(diagram).to_have_attribute("data-status", "FAILED")
    await expect(page.locator("#order-title")).to_contain_text(name)
    await expect(diagram.locator("g.state[data-state=Confirm]")).to_have_class(
        re.compile(r"\bfailed\b")
    )
    await expect(diagram.locator("g.state[data-state=Confirm] .retries")).to_have_count(1)
    await expect(diagram.locator("g.state[data-state=Parked]")).to_have_class(
        re.compile(r"\bcurrent\b")
    )
    await expect(diagram.locator("g.state[data-state=Done]")).not_to_have_class(
        re.compile(r"\bvisited\b")
    )
    await page.screenshot(path=shots / "09-parked-execution.png", full_page=True)
    page.once("dialog", accept)
    await page.click("#redrive-execution")
    await expect(page.locator("#ops-status")).to_contain_text("RUNNING from Confirm")
    await expect(diagram).to_have_attribute("data-status", "RUNNING")
    await expect(page.locator("#redrive-execution")).to_be_hidden()
    assert len(confirmations) == 2
    assert name in confirmations[1]
    async with stack_engine.connect() as connection:
        stored = (
            await connection.execute(sa.select(executions).where(executions.c.name == name))
        ).one()
    assert (stored.status, stored.current_state) == ("RUNNING", "Confirm")
    # The dependency back, an engine of the machine runs it to its end; the page shows it.
    gate.open = True
    await parking_engine(stack_engine, machine, gate).run_until_idle()
    await page.click("#order-refresh")
    await expect(diagram).to_have_attribute("data-status", "SUCCEEDED")
    await expect(diagram.locator("g.state[data-state=Done]")).to_have_class(
        re.compile(r"\bvisited\b")
    )
    await page.screenshot(path=shots / "10-redriven-execution.png", full_page=True)

    assert not errors, errors
    # Nothing from the network: every request of the page went to the gateway.
    outside = [url for url in requested if not url.startswith((gateway, "data:"))]
    assert not outside, outside
    await page.close()
