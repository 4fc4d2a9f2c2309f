"""`python -m local_supervisor` (what `make run` calls): wire stores, migrations and services.

Tests, the chaos harness and the benchmark start this same command through
local_supervisor.launcher, with the flags (settings.command_line), ready mark (session.READY_MARK)
and state file (state_file) defined here once."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

from local_supervisor.console import PrefixedConsole
from local_supervisor.embedded import EmbeddedPostgres, free_port, redis_server_spec, redis_url
from local_supervisor.processes import Supervisor, describe_exit
from local_supervisor.session import (
    StackPlan,
    StartupError,
    mask_password,
    quiet_grpc_fork,
    run_event_loop,
    supervise,
)
from local_supervisor.settings import RunOptions, SupervisorSettings, parse_options
from local_supervisor.stack import (
    STACK,
    local_outputs,
    metrics_line,
    migration_spec,
    ports_in_use,
    service_specs,
)
from local_supervisor.tracing import local_tracing
from local_supervisor.zones import held_zones_path


def main(argv: list[str] | None = None) -> int:
    """Run the local stack until Ctrl-C or SIGTERM; return the process exit code."""
    base_env = dict(os.environ)  # what children inherit, before the supervisor adds its own
    quiet_grpc_fork()
    options = parse_options(sys.argv[1:] if argv is None else argv, SupervisorSettings())
    console = PrefixedConsole(sys.stdout, names=[entry.name for entry in STACK])
    return run_event_loop(_run(options, console, base_env))


async def _run(options: RunOptions, console: PrefixedConsole, base_env: Mapping[str, str]) -> int:
    supervisor = Supervisor(
        console=console,
        base_env=base_env,
        state_file=options.state_file,
        stop_grace=options.stop_grace,
        held_zones_file=held_zones_path(options.data_dir),
    )
    prepare = partial(local_stack, options=options, console=console, base_env=base_env)
    return await supervise(
        prepare, supervisor=supervisor, console=console, ready_timeout=options.ready_timeout
    )


@asynccontextmanager
async def local_stack(
    supervisor: Supervisor,
    *,
    options: RunOptions,
    console: PrefixedConsole,
    base_env: Mapping[str, str],
) -> AsyncIterator[StackPlan]:
    """Bring up PostgreSQL, Redis and the schema; yield the services to run; stop the stores."""
    taken = ports_in_use(
        base_port=options.base_port, http_ports=options.http_ports, replicas=options.replicas
    )
    if taken:
        raise StartupError(
            f"already in use: {', '.join(taken)}; is another `make run` still running? "
            "(--base-port or SUPERVISOR_BASE_PORT picks other ports)"
        )
    async with AsyncExitStack() as cleanup:
        database_url = options.database_url
        if database_url is None:
            postgres = await _start_postgres(options, console)
            cleanup.push_async_callback(_stop_postgres, postgres, console)
            database_url = postgres.database_url
        # Registered after PostgreSQL, so it runs first: services stop before their database.
        cleanup.push_async_callback(supervisor.stop)
        cache_url = options.redis_url or await _start_redis(supervisor, options, console)
        extra_env = local_outputs(options.data_dir) | local_tracing(options.data_dir, base_env)
        if not options.skip_migrate:
            await _migrate(supervisor, console, database_url)
            # Migrations ran once here; four services racing to run them again would only hurt.
            extra_env["MIGRATE_ON_START"] = base_env.get("MIGRATE_ON_START", "false")
        services = service_specs(
            base_port=options.base_port,
            database_url=database_url,
            redis_url=cache_url,
            http_ports=options.http_ports,
            extra_env=extra_env,
            replicas=options.replicas,
            psp_url=options.psp_url,
        )
        yield StackPlan(
            services=services,
            resources={
                "DATABASE_URL": mask_password(database_url),
                "REDIS_URL": mask_password(cache_url),
            },
            next_steps=[
                metrics_line(services),
                *_try_it(options.http_ports["gateway"], base_env),
            ],
        )


def _try_it(gateway_port: int, base_env: Mapping[str, str]) -> list[str]:
    """A ready-to-paste curl call, when the gateway runs with its development secret."""
    from gateway.server import curl_example
    from gateway.settings import DEV_JWT_SECRET, GatewaySettings

    if base_env.get("GATEWAY_JWT_SECRET", DEV_JWT_SECRET) != DEV_JWT_SECRET:
        return []  # a real secret: no token is printed
    settings = GatewaySettings(gateway_port=gateway_port, gateway_jwt_secret=DEV_JWT_SECRET)
    return [f"try it: {curl_example(settings)}", "(`make token` prints a token of your own)"]


async def _start_postgres(options: RunOptions, console: PrefixedConsole) -> EmbeddedPostgres:
    pgdata = options.data_dir / "postgres"
    console.say(f"starting embedded PostgreSQL (data in {pgdata})")
    started = time.monotonic()
    try:
        postgres = await EmbeddedPostgres.start(pgdata)
    except Exception as error:
        raise StartupError(
            f"embedded PostgreSQL did not start: {error!r}; its log is {pgdata / 'log'}"
        ) from error
    console.say(f"PostgreSQL ready in {time.monotonic() - started:.1f}s")
    return postgres


async def _stop_postgres(postgres: EmbeddedPostgres, console: PrefixedConsole) -> None:
    console.say("stopping embedded PostgreSQL")
    await postgres.stop()
    console.say("embedded PostgreSQL stopped")


async def _start_redis(
    supervisor: Supervisor, options: RunOptions, console: PrefixedConsole
) -> str:
    port = free_port()
    data_dir = options.data_dir / "redis"
    console.say(f"starting embedded Redis on port {port} (data in {data_dir})")
    supervisor.launch([redis_server_spec(data_dir, port=port)])
    answers = await supervisor.wait_until_ready(["redis"], within=options.ready_timeout)
    if not answers["redis"].ready:
        raise StartupError(
            f"embedded Redis did not answer PING within {options.ready_timeout:g}s "
            f"({answers['redis'].detail})"
        )
    return redis_url(port)


async def _migrate(supervisor: Supervisor, console: PrefixedConsole, database_url: str) -> None:
    console.say("running migrations")
    started = time.monotonic()
    returncode = await supervisor.run_to_completion(migration_spec(database_url=database_url))
    if returncode is None:
        raise StartupError("stopped while migrations were running")
    if returncode != 0:
        raise StartupError(
            f"migrations failed ({describe_exit(returncode)}); not starting the services "
            "(--skip-migrate skips them)"
        )
    console.say(f"migrations done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    raise SystemExit(main())
