"""Constants shared by the client protocol and the exchange: why reading from a
client is paused, and what a connection's deadline means when it passes."""

from __future__ import annotations

# Reasons to stop reading from a client (bits; reading resumes when none is left).
PAUSE_UPSTREAM_FULL = 1  # the dyno takes bytes slower than the client sends them
PAUSE_BUFFER = 2  # body bytes pile up before the dyno is connected
PAUSE_QUEUE = 4  # pipelined requests are waiting
PAUSE_UPGRADE = 8  # an Upgrade request waits for the dyno's answer

# What a connection's deadline means when it passes (ClientProtocol.on_deadline).
KEEPALIVE = 0  # waiting for (the rest of) the next request head
BACKLOG = 1  # waiting in the app backlog for a dyno slot -> H12
FIRST_BYTE = 2  # request sent, waiting for the response to start -> H12
CLIENT_BODY = 3  # waiting for the client to send more of its body -> H28
IDLE = 4  # response streaming -> H15 (or H28 when the client stopped reading)
TUNNEL = 5  # an upgraded connection went quiet
NONE = 6
BOOTING = 7  # held while the app's web dynos are all starting -> H20
