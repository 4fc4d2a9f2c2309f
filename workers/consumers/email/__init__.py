"""The email consumer: order confirmations and cancellation notices through the mailer port."""
