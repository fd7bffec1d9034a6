
# Before anything imports grpc: slipway sets its fork policy (see slipway/__init__.py).
import slipway  # noqa: F401
