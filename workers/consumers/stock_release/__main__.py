"""Run the stock-release consumer: `python -m workers.consumers.stock_release`."""

from workers.consumers.runner import main
from workers.consumers.stock_release.bootstrap import StockReleaseSettings, wire

main(StockReleaseSettings, wire)
