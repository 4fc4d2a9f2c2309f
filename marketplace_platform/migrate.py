"""Apply every service's migrations: `python -m marketplace_platform.migrate [service ...]`."""

from __future__ import annotations

import argparse
import logging
import time

from marketplace_platform.logs import configure_logging
from marketplace_platform.migrations import discover_services, upgrade
from marketplace_platform.settings import ServiceSettings

log = logging.getLogger("migrate")


def main() -> None:
    """Migrate the named services (all by default) against DATABASE_URL."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("services", nargs="*", help="service names (default: all)")
    args = parser.parse_args()
    settings = ServiceSettings(service_name="migrate")
    configure_logging("migrate", settings.log_level)
    available = discover_services()
    unknown = set(args.services) - set(available)
    if unknown:
        parser.error(f"unknown services: {', '.join(sorted(unknown))}")
    for name in args.services or list(available):
        started = time.monotonic()
        upgrade(settings.database_url, available[name])
        log.info("migrated %s in %.2fs", name, time.monotonic() - started)


if __name__ == "__main__":
    main()
