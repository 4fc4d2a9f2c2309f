"""An in-process carrier simulator with configurable faults (error rate, latency)."""
