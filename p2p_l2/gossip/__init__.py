"""Gossip: the sans-IO flooding core and its wire kinds."""

from ..errors import RemoteProtocolError
from ..wire import codec
from ..wire.codec import Bytes, fields
from .core import ID_SIZE, MAX_HOPS, Deliver, Gossip, Ignore, Reject, Send, message_id

MAX_IDS = 1_000  # ids in one inv / getdata
MAX_NAME = 64  # topic and origin lengths

_object = fields(id=Bytes(ID_SIZE), t=str, d=bytes, h=int, o=str, ts=float)
_ids = fields(ids=[Bytes(ID_SIZE)])


def _gossip(payload):
    p = _object(payload)
    if not (0 <= p["h"] <= MAX_HOPS and 0 < len(p["t"]) <= MAX_NAME and len(p["o"]) <= MAX_NAME):
        raise RemoteProtocolError("bad_payload", "gossip: hops, topic or origin out of range")
    return p


def _id_list(payload):
    p = _ids(payload)
    if len(p["ids"]) > MAX_IDS:
        raise RemoteProtocolError("bad_payload", f"more than {MAX_IDS} ids")
    return p


codec.register("gossip", _gossip)
codec.register("inv", _id_list)
codec.register("getdata", _id_list)

__all__ = ["Deliver", "Gossip", "Ignore", "Reject", "Send", "message_id", "ID_SIZE"]
