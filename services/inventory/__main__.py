"""Run the inventory service: `python -m services.inventory`."""

from services.inventory.bootstrap import main

main()
