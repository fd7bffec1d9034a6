"""The frames an attached dyno's shim and its agent exchange over a Unix socket.

    header: type (1 byte), payload length (4 bytes, big endian); then the payload

agent -> shim                          shim -> agent
  STDIN      bytes for the dyno          STDOUT  bytes the dyno wrote (all of it with a tty)
  STDIN_EOF  no more input               STDERR  bytes on the dyno's stderr (pipes only)
  RESIZE     rows, cols (2 x uint16)     EXIT    exit status (int32); always the last frame

Only the standard library is used: the shim imports this module.
"""

from __future__ import annotations

import struct

STDIN = 1
STDIN_EOF = 2
RESIZE = 3
STDOUT = 11
STDERR = 12
EXIT = 13

HEADER = struct.Struct(">BI")
MAX_PAYLOAD = 64 * 1024
_RESIZE = struct.Struct(">HH")
_EXIT = struct.Struct(">i")


class FrameError(ValueError):
    """A malformed frame: the peer is not speaking this protocol."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"frame payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return HEADER.pack(kind, len(payload)) + payload


def resize(rows: int, cols: int) -> bytes:
    return frame(RESIZE, _RESIZE.pack(_clamp16(rows), _clamp16(cols)))


def exit_frame(status: int) -> bytes:
    return frame(EXIT, _EXIT.pack(status))


def parse_resize(payload: bytes) -> tuple[int, int]:
    if len(payload) != _RESIZE.size:
        raise FrameError("bad resize frame")
    rows, cols = _RESIZE.unpack(payload)
    return int(rows), int(cols)


def parse_exit(payload: bytes) -> int:
    if len(payload) != _EXIT.size:
        raise FrameError("bad exit frame")
    return int(_EXIT.unpack(payload)[0])


def _clamp16(value: int) -> int:
    return max(0, min(int(value), 0xFFFF))


class Decoder:
    """Incremental decoder: feed bytes as they arrive, take whole frames out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        frames: list[tuple[int, bytes]] = []
        while len(self._buf) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buf)
            if length > MAX_PAYLOAD:
                raise FrameError(f"frame of {length} bytes is over {MAX_PAYLOAD}")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((kind, bytes(self._buf[HEADER.size : end])))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)
