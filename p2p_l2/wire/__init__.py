"""The wire layer: framing, message codec, node identity and the authenticated handshake.

Everything here is sans-IO: bytes in, bytes out, no sockets, no clock (DESIGN §2-§3).
"""

from p2p_l2.wire.codec import Bytes, Optional, decode, encode, fields, register, registered
from p2p_l2.wire.framing import MAX_FRAME_SIZE, FrameDecoder, encode_frame
from p2p_l2.wire.handshake import PROTOCOL_VERSION, Handshake, ReplayCache, Session, session_pair
from p2p_l2.wire.identity import Identity, verify

__all__ = [
    "MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "Bytes",
    "FrameDecoder",
    "Handshake",
    "Identity",
    "Optional",
    "ReplayCache",
    "Session",
    "session_pair",
    "decode",
    "encode",
    "encode_frame",
    "fields",
    "register",
    "registered",
    "verify",
]
