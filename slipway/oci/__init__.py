"""OCI sandboxes on runc: stacks, bundle generation and the runc wrapper.

Shared by the agent (dynos) and the builder (buildpack compiles).
"""

from slipway.oci.runc import ContainerState, Runc
from slipway.oci.spec import ContainerSpec, app_overlay, build_config, rw_bind, write_bundle
from slipway.oci.stack import (
    SANDBOX_GID,
    SANDBOX_UID,
    HostStack,
    ImageStack,
    Mount,
    Stack,
    ro_bind,
)

__all__ = [
    "SANDBOX_GID",
    "SANDBOX_UID",
    "ContainerSpec",
    "ContainerState",
    "HostStack",
    "ImageStack",
    "Mount",
    "Runc",
    "Stack",
    "app_overlay",
    "build_config",
    "ro_bind",
    "rw_bind",
    "write_bundle",
]
