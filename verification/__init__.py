"""Verification of the whole stack under faults: the chaos driver, fault injectors, invariants."""

import local_supervisor  # noqa: F401  # first: gRPC's fork handlers off before grpc loads
