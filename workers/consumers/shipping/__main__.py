"""Run the shipping consumer: `python -m workers.consumers.shipping`."""

from workers.consumers.runner import main
from workers.consumers.shipping.bootstrap import wire
from workers.consumers.shipping.settings import ShippingSettings

main(ShippingSettings, wire)
