"""The shared platform library: settings, gRPC server and client plumbing, persistence, outbox."""
