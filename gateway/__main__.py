"""Run the HTTP gateway: `python -m gateway`."""

from gateway.server import main

if __name__ == "__main__":
    raise SystemExit(main())
