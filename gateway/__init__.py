"""The HTTP gateway: public JSON API <-> gRPC, auth, throttling, problem details (issue 7)."""
