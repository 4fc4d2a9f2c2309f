"""The gRPC services: cart, inventory, payment and checkout, each owning its own schema."""
