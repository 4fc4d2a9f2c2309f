"""Print a development JWT: `python -m gateway.dev_token [--sub ID] [--scope admin]`."""

from __future__ import annotations

import argparse
import sys

from gateway.auth import issue_token
from gateway.settings import GatewaySettings


def main(argv: list[str] | None = None) -> int:
    """Print a token signed with GATEWAY_JWT_SECRET (the development secret by default)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sub", default="customer-dev", help="the customer id (JWT sub)")
    parser.add_argument(
        "--scope", action="append", default=[], help="a scope to grant, e.g. admin (repeatable)"
    )
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    args = parser.parse_args(argv)
    settings = GatewaySettings()
    token = issue_token(
        secret=settings.gateway_jwt_secret,
        subject=args.sub,
        scopes=tuple(args.scope),
        ttl_seconds=args.ttl,
    )
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
