"""Run the checkout service: `python -m services.checkout`."""

from services.checkout.bootstrap import main

main()
