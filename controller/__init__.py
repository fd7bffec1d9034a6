"""The Slipway controller: desired state in etcd, the gRPC API, scheduling."""

# Before anything imports grpc: slipway sets its fork policy (see slipway/__init__.py).
import slipway  # noqa: F401
