"""Run the PSP simulator: `python -m simulators.psp`."""

from simulators.psp.server import main

if __name__ == "__main__":
    raise SystemExit(main())
