"""Stand-ins for the outside world: the payment provider (psp) and the carrier."""
