"""Run the invoice consumer: `python -m workers.consumers.invoice`."""

from workers.consumers.invoice.bootstrap import InvoiceSettings, wire
from workers.consumers.runner import main

main(InvoiceSettings, wire)
