"""Adapter Lambdas of the checkout saga: one thin handler per Task state of the state machine.

Each handler translates the state's input into one gRPC call (with a deadline and an
idempotency key derived from the order id) and its answer into JSON, or into a named error that
the definition in deploy/ecs/checkout_saga.asl.json retries or catches. No business rules here.
Each step is an async core (`run`) the local saga engine awaits; `handler` is the same step as
the blocking entry point a Lambda calls.
"""
