"""slipway-router: the stateless HTTP router in front of every app's web dynos."""

# Before anything imports grpc: slipway sets its fork policy (see slipway/__init__.py).
import slipway  # noqa: F401
