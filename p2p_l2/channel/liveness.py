"""When to stop waiting on a channel's peer (sans-IO; the service asks once a second).

Design: progress is the committed seq moving.  While we wait on the peer (an update in
flight, ops queued, or a sync unanswered) without progress, we re-synchronise every
RESYNC_AFTER seconds (a message was lost on a lossy link: drop the link, and both ends
re-sync on reconnect), and after UNRESPONSIVE seconds we force-close.  A wait that gave up
after a resync (say, its HTLC expired in the queue) still counts: the peer never answered.
An idle channel accumulates nothing.
"""

from __future__ import annotations

__all__ = ["FORCE_CLOSE", "RESYNC", "RESYNC_AFTER", "UNRESPONSIVE", "Liveness"]

RESYNC_AFTER = 2.0  # seconds without progress before we re-synchronise
UNRESPONSIVE = 10.0  # seconds without progress before we force-close
RESYNC, FORCE_CLOSE = "resync", "force_close"


class Liveness:
    __slots__ = ("seq", "since", "resynced")

    def __init__(self) -> None:
        self.seq: int | None = None  # the committed seq when the current wait began
        self.since = self.resynced = 0.0

    def check(self, seq: int, waiting: bool, now: float) -> str | None:
        """RESYNC, FORCE_CLOSE or None, given the committed `seq` and whether we are
        waiting on the peer at `now`."""
        if self.seq != seq or (not waiting and self.since == self.resynced):
            self.seq, self.since, self.resynced = seq, now, now
            return None
        if now - self.since > UNRESPONSIVE:
            return FORCE_CLOSE
        if waiting and now - self.resynced > RESYNC_AFTER:
            self.resynced = now
            return RESYNC
        return None
