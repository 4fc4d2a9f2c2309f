"""verification.replica on real servers: a primary with a synchronous or an asynchronous
streaming standby, the writer endpoint over both, the primary killed and the standby promoted."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest

from verification.replica import replica_pair

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("synchronous", [True, False], ids=["synchronous", "asynchronous"])
async def test_the_standby_streams_and_takes_over_the_writer(synchronous: bool) -> None:
    async with replica_pair(synchronous=synchronous) as pair:
        assert pair.standby is not None
        primary = await asyncpg.connect(pair.primary.url())
        try:
            state = await primary.fetchval("SELECT sync_state FROM pg_stat_replication")
            assert state == ("sync" if synchronous else "async")
            assert await primary.fetchval("SHOW synchronous_commit") == "on"
            assert await primary.fetchval("SHOW fsync") == "on"
            await primary.execute("CREATE TABLE marks (n int); INSERT INTO marks VALUES (1)")
        finally:
            await primary.close()
        await pair.wait_replayed()

        writer = await asyncpg.connect(pair.writer_url("postgres"))
        try:
            assert await writer.fetchval("SELECT inet_server_port()") == pair.primary.port
        finally:
            await writer.close()

        pair.primary.kill()
        await pair.standby.promote()
        writer = await asyncpg.connect(pair.writer_url("postgres"))
        try:
            assert await writer.fetchval("SELECT inet_server_port()") == pair.standby.port
            assert await writer.fetchval("SELECT count(*) FROM marks") == 1
            await writer.execute("INSERT INTO marks VALUES (2)")  # no standby to wait for
        finally:
            await writer.close()
