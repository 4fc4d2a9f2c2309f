"""A gateway without OPS_DATABASE_URL (as on AWS, so far): the console's API still checks the
token first, then answers 503 "operator console not configured"; the rest of the gateway is
unchanged."""

from __future__ import annotations

import pytest

from gateway.auth import ADMIN_SCOPE, issue_token
from local_supervisor.embedded import free_port
from tests.integration.test_gateway import SECRET, gateway_settings, running_gateway


@pytest.mark.parametrize("path", ["/ops/api/orders", "/ops/api/alarms", "/ops/api/queues"])
async def test_an_unconfigured_console_answers_503_after_the_token_check(
    redis_server_url: str, path: str
) -> None:
    settings = gateway_settings(free_port(), redis_server_url, ops_database_url=None)
    admin = issue_token(secret=SECRET, subject="operator-1", scopes=(ADMIN_SCOPE,))
    async with running_gateway(settings) as gateway, gateway.client() as http:
        assert (await http.get(path)).status_code == 401
        answer = await http.get(path, headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"] == "operator console not configured"
        assert (await http.get("/healthz")).status_code == 200
