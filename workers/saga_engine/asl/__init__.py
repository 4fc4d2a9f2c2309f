"""The Amazon States Language interpreter: pure, no I/O; tasks are run through a port."""
