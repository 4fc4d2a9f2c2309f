"""Run the cart service: `python -m services.cart`."""

from services.cart.bootstrap import main

main()
