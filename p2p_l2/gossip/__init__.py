"""Gossip: the sans-IO flooding core and its wire kinds."""

from ..wire import codec
from ..wire.codec import Bytes, fields
from .core import ID_SIZE, Deliver, Gossip, Reject, Send, message_id

codec.register("gossip", fields(id=Bytes(ID_SIZE), t=str, d=bytes, h=int, o=str, ts=float))
codec.register("inv", fields(ids=[Bytes(ID_SIZE)]))
codec.register("getdata", fields(ids=[Bytes(ID_SIZE)]))

__all__ = ["Deliver", "Gossip", "Reject", "Send", "message_id", "ID_SIZE"]
