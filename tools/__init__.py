"""Developer and release tools, run from the repository root."""
