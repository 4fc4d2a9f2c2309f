"""Inventory: stock per SKU, reservations per order, and the ledger of every movement."""
