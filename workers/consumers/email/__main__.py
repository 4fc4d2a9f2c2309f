"""Run the email consumer: `python -m workers.consumers.email`."""

from workers.consumers.email.bootstrap import EmailSettings, wire
from workers.consumers.runner import main

main(EmailSettings, wire)
