"""Verification of the whole stack under faults: the chaos driver, fault injectors, invariants."""
