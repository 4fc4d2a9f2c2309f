"""Benchmarks of the platform's hot paths against real PostgreSQL (`make bench`)."""
