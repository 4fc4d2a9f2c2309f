"""The process: settings, logs, the SQLite ledger and uvicorn, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from marketplace_platform.logs import configure_logging
from simulators.psp.faults import FaultInjector
from simulators.psp.http_api import build_app
from simulators.psp.ledger import Ledger
from simulators.psp.middleware import DROP_EXTENSION
from simulators.psp.settings import PspSettings

SERVICE_NAME = "psp-simulator"

log = logging.getLogger(__name__)


class DroppableHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, letting the app close a connection without answering."""

    def on_message_begin(self) -> None:
        """Start a request's scope with the drop-connection extension in it."""
        super().on_message_begin()
        self.scope["extensions"] = {DROP_EXTENSION: {"abort": self.transport.abort}}


def main() -> int:
    """Serve until SIGTERM or SIGINT (uvicorn stops gracefully); return the exit code."""
    settings = PspSettings()
    configure_logging(SERVICE_NAME, settings.log_level)
    ledger = Ledger.open(settings.database_path)
    try:
        faults = FaultInjector(settings.initial_faults())
        log.info(
            "PSP simulator on %s:%d, state in %s, faults %s",
            settings.host,
            settings.port,
            settings.database_path,
            faults.config.model_dump(),
        )
        config = uvicorn.Config(
            build_app(ledger=ledger, faults=faults),
            host=settings.host,
            port=settings.port,
            http=DroppableHttpProtocol,
            loop="auto",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        )
        server = uvicorn.Server(config)
        _survive_stop_signals()
        server.run()
        return 0 if server.started else 1
    finally:
        ledger.close()
        log.info("PSP simulator stopped")


def _survive_stop_signals() -> None:
    """Let uvicorn's re-raise of the stop signal, after its graceful stop, end `main` normally.

    uvicorn restores the handlers it found and raises the signal it caught again; with the
    default handlers that would kill the process before the ledger is closed.
    """

    def stopped(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopped gracefully", signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stopped)
