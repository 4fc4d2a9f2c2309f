"""Container entry point: build DATABASE_URL and REDIS_URL from their parts, then run the process.

ECS injects the database credentials and the Redis AUTH token from Secrets Manager as separate
variables (DB_USERNAME, DB_PASSWORD, REDIS_AUTH_TOKEN) and the hosts as plain ones; the
processes read one URL each. The password is percent-encoded here, once, so a rotated password
with any character still makes a valid URL. The database URL asks for a server that takes writes
(`target_session_attrs=read-write`): DB_HOST is the cluster's writer endpoint, a DNS name that a
failover moves to the new writer, and a connection that still reaches the old one (now a reader)
is refused instead of used (marketplace_platform.db). A URL already set is left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from urllib.parse import quote


def database_url(env: Mapping[str, str]) -> str | None:
    """postgresql://user:password@host:port/name?... (TLS, a writer only) from DB_*, or None
    when DB_HOST is unset."""
    if "DATABASE_URL" in env or "DB_HOST" not in env:
        return None
    user = quote(env["DB_USERNAME"], safe="")
    password = quote(env["DB_PASSWORD"], safe="")
    port = env.get("DB_PORT", "5432")
    name = env.get("DB_NAME", "marketplace")
    return f"postgresql://{user}:{password}@{env['DB_HOST']}:{port}/{name}?ssl=require&target_session_attrs=read-write"


def redis_url(env: Mapping[str, str]) -> str | None:
    """rediss://:token@host:6379/0 (TLS) from REDIS_*, or None when REDIS_HOST is unset."""
    if "REDIS_URL" in env or "REDIS_HOST" not in env:
        return None
    token = quote(env.get("REDIS_AUTH_TOKEN", ""), safe="")
    auth = f":{token}@" if token else ""
    return f"rediss://{auth}{env['REDIS_HOST']}:{env.get('REDIS_PORT', '6379')}/0"


def process_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment the process runs with: the URLs added, the secret parts removed."""
    result = dict(env)
    for name, value in (("DATABASE_URL", database_url(env)), ("REDIS_URL", redis_url(env))):
        if value is not None:
            result[name] = value
    for part in ("DB_PASSWORD", "REDIS_AUTH_TOKEN"):
        result.pop(part, None)
    return result


def main(argv: Sequence[str]) -> None:
    """Replace this process with argv (e.g. python -m services.cart) in the built environment."""
    if not argv:
        raise SystemExit("usage: entrypoint.py <command> [args...]")
    os.execvpe(argv[0], list(argv), process_environment(os.environ))


if __name__ == "__main__":
    main(sys.argv[1:])
