"""The builder pool: JetStream build jobs, buildpacks in runc, slugs in the object store."""

# Before anything imports grpc: slipway sets its fork policy (see slipway/__init__.py).
import slipway  # noqa: F401
