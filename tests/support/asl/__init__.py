"""Test-only state machines and handlers for the saga engine."""
