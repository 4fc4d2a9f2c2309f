"""Checkout: orders, PlaceOrder's idempotency, and the saga's order steps."""
