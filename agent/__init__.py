"""The node agent: dyno containers on one host, their health, logs and routes."""

# Before anything imports grpc: slipway sets its fork policy (see slipway/__init__.py).
import slipway  # noqa: F401
