"""The shipping consumer: ShipmentRequested -> carrier -> ShipmentCreated -> ship and capture."""
