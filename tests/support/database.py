"""Types of the database fixtures (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

MakeEngine = Callable[..., AsyncEngine]
"""`make_engine(**service_settings)`: a new engine on the migrated session database."""
