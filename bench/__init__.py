"""Benchmarks of the platform's hot paths against real PostgreSQL (`make bench`)."""

import local_supervisor  # noqa: F401  # first: gRPC's fork handlers off before grpc loads
