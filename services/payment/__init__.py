"""Payment: authorizations, captures, voids and refunds at the PSP, and their ledger."""
