"""Length-prefixed framing: a 4-byte big-endian length, then the body.

Design: `FrameDecoder` is sans-IO (cf. h11's ReceiveBuffer): `feed()` bytes as they
arrive, pull whole bodies with `next_frame()` until it returns None.  It keeps one
bytearray and a read offset, compacting only when the dead prefix outgrows the live data,
so a chunk holding thousands of small frames decodes in linear time.  An oversize length
prefix is refused as soon as its 4 bytes are in, before any of the body is buffered.
"""

from __future__ import annotations

import struct

from p2p_l2.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["MAX_FRAME_SIZE", "FrameDecoder", "encode_frame"]

MAX_FRAME_SIZE = 36 * 1024 * 1024  # a full block (32 MiB) plus its gossip envelope
_HEADER = 4
_PREFIX_LIMIT = 0xFFFFFFFF
_pack_len = struct.Struct(">I").pack
_unpack_len = struct.Struct(">I").unpack_from
# Compact the buffer once the consumed prefix is at least this big and at least
# half of it (amortised O(1) per byte).
_COMPACT_MIN = 64 * 1024


def encode_frame(body: bytes) -> bytes:
    """Return `body` with its 4-byte length prefix.

    Only the prefix's own limit (4 GiB) is checked here: the size limit belongs to the
    receiver's FrameDecoder (peer links use MAX_FRAME_SIZE, the control API a larger one),
    so senders on a peer link must keep their frames within MAX_FRAME_SIZE themselves.
    """
    n = len(body)
    if n > _PREFIX_LIMIT:
        raise LocalProtocolError(f"frame of {n} bytes does not fit a 4-byte length prefix")
    return _pack_len(n) + body


class FrameDecoder:
    """Reassembles frames from a byte stream cut at arbitrary points."""

    __slots__ = ("max_size", "_buf", "_pos")

    def __init__(self, max_size: int = MAX_FRAME_SIZE):
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes (any chunking)."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        """Return the next whole body, or None if more data is needed.

        Raises RemoteProtocolError("frame_too_large") as soon as a length prefix over
        `max_size` is buffered; the stream is then unusable (every later call raises too).
        """
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < _HEADER:
            return None
        (n,) = _unpack_len(buf, pos)
        if n > self.max_size:
            raise RemoteProtocolError("frame_too_large", f"length prefix {n} > max {self.max_size}")
        end = pos + _HEADER + n
        if end > len(buf):
            return None
        body = bytes(buf[pos + _HEADER : end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        elif end >= _COMPACT_MIN and end * 2 >= len(buf):
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return body
