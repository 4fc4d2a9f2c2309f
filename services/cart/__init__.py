"""Cart: the product catalog with prices and customers' carts (cached in Redis)."""
