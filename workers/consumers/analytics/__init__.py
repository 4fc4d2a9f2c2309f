"""The analytics consumer: one order fact per event, appended to a sink."""
