"""Link faults a node applies to its own side of a link (DESIGN §3, §7).

This is the seed of the link conditioner: today a blackhole per peer, which is what a
partition is made of (a blackhole on both ends of every cross-group link).  A blackholed
peer gets nothing from us and nothing from it is processed; the link then times out on
keepalive and is not re-dialled or accepted until the fault is cleared.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LinkFault:
    blackhole: bool = False

    def to_dict(self) -> dict:
        return {"blackhole": self.blackhole}


class LinkFaults:
    """The faults on each of a node's links, by peer name (sans-IO)."""

    def __init__(self) -> None:
        self.by_peer: dict[str, LinkFault] = {}

    def set(self, peer: str, **params) -> LinkFault:
        fault = LinkFault(**params)
        self.by_peer[peer] = fault
        return fault

    def clear(self, peer: str | None = None) -> list[str]:
        """Lift the faults on `peer` (or on every link); returns the peers affected."""
        peers = [peer] if peer is not None else list(self.by_peer)
        return [p for p in peers if self.by_peer.pop(p, None) is not None]

    def blackholed(self, peer: str) -> bool:
        fault = self.by_peer.get(peer)
        return fault is not None and fault.blackhole
