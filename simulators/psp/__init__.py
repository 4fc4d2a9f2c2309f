"""A stand-in payment provider: a Stripe-like HTTP/JSON API with durable state and faults."""
