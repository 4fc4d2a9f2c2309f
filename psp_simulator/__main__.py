"""Run the PSP simulator: `python -m psp_simulator`."""

from psp_simulator.server import main

if __name__ == "__main__":
    raise SystemExit(main())
