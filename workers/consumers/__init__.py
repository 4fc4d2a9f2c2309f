"""Side-effect consumers (shipping, email, analytics, invoice), each idempotent by an inbox."""
