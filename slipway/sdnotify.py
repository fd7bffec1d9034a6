"""systemd readiness (``Type=notify``): tell the service manager we are listening.

A no-op when not started by systemd (no ``NOTIFY_SOCKET``), so daemons call it
unconditionally once they serve.
"""

from __future__ import annotations

import os
import socket


def notify(state: str = "READY=1") -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    return notify("STOPPING=1")
