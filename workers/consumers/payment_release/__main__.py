"""Run the payment-release consumer: `python -m workers.consumers.payment_release`."""

from workers.consumers.payment_release.bootstrap import PaymentReleaseSettings, wire
from workers.consumers.runner import main

main(PaymentReleaseSettings, wire)
