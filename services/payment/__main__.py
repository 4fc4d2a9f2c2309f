"""Run the payment service: `python -m services.payment`."""

from services.payment.bootstrap import main

main()
