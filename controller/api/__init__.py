"""The controller's gRPC boundary: servicers, auth, error translation, proto conversion."""
