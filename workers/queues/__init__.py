"""The queue port's adapters: PostgreSQL queues for local runs, SQS on AWS."""
