"""Sandbox networking: CNI plugins, network namespaces and the nftables firewall.

    plugins.py     runs CNI plugins per the spec (ADD / CHECK / DEL)
    sandboxnet.py  SandboxNetwork: bridge, subnet, netns, attachments on disk
    firewall.py    the pure rule plan (FirewallSpec -> nft table) and its apply

Shared by the agent (dynos) and the builder (build steps).
"""

from slipway.cni.firewall import AddonGrant, FirewallSpec, Sandboxed
from slipway.cni.plugins import Cni, CniError
from slipway.cni.sandboxnet import Attachment, NetOptions, SandboxNetwork

__all__ = [
    "AddonGrant",
    "Attachment",
    "Cni",
    "CniError",
    "FirewallSpec",
    "NetOptions",
    "SandboxNetwork",
    "Sandboxed",
]
