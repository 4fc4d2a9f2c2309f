"""Run the analytics consumer: `python -m workers.consumers.analytics`."""

from workers.consumers.analytics.bootstrap import AnalyticsSettings, wire
from workers.consumers.runner import main

main(AnalyticsSettings, wire)
