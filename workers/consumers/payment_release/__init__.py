"""The payment-release consumer: a cancelled order's payment gives back what it holds."""
