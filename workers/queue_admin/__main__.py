"""`python -m workers.queue_admin list | dlq QUEUE | redrive QUEUE | lag`."""

from workers.queue_admin.cli import main

main()
