"""The invoice consumer: one immutable invoice document per confirmed order."""
