"""The Slipway controller: desired state in etcd, the gRPC API, scheduling."""
