"""Sans-IO peer policy: reconnect backoff and misbehaviour scores with time-limited bans."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Points a peer earns per offence; BAN_SCORE bans it for `ban_seconds`.  Scores decay by
# DECAY points a second, so honest races (a tx relayed just as a block spent its nonce)
# never add up to a ban, while forgeries ban at once.
PENALTY = {
    # wire
    "malformed": 20, "unknown_kind": 10, "bad_payload": 10, "frame_too_large": 100,
    "decrypt_failed": 100, "bad_signature": 100, "wrong_network": 100, "bad_version": 100,
    "replayed_hello": 100, "bad_msg_id": 50, "unexpected_message": 20, "invalid": 25,
    # layer 1: forged or malformed objects
    "bad_tx": 50, "bad_block": 100, "unknown_miner": 100, "bad_merkle": 100, "bad_height": 50,
    "too_many_txs": 100, "invalid_tx": 50, "invalid_parent": 20, "malformed_tx": 50,
    # layer 1: what honest peers send in a race or under load
    "bad_nonce": 1, "insufficient_funds": 1, "nonce_gap_too_large": 1, "bad_time": 5,
    "duplicate": 0, "replacement_fee_too_low": 0, "mempool_full": 0, "fee_too_low": 0,
}
BAN_SCORE = 100
DECAY = 1.0


@dataclass
class Backoff:
    """Capped exponential backoff with "equal jitter": sleep c/2 + U(0, c/2), c = min(cap, base*2^n).

    Never a busy loop (at least c/2), and peers that failed together spread out."""

    base: float = 0.02
    cap: float = 1.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


class Scoreboard:
    """Misbehaviour points per peer; a peer at BAN_SCORE is banned until `now + ban_seconds`."""

    def __init__(self, ban_seconds: float = 60.0, ban_score: int = BAN_SCORE):
        self.ban_seconds = ban_seconds
        self.ban_score = ban_score
        self.scores: dict[str, tuple[float, float]] = {}  # peer -> (score, when)
        self.banned_until: dict[str, float] = {}

    def score(self, peer: str, now: float) -> float:
        score, when = self.scores.get(peer, (0.0, now))
        return max(0.0, score - DECAY * (now - when))

    def penalize(self, peer: str, reason: str, now: float) -> bool:
        """Add the reason's points; True when this offence bans the peer."""
        points = PENALTY.get(reason, PENALTY.get(reason.split(":")[0], 10))
        score = self.score(peer, now) + points
        if score >= self.ban_score:
            self.banned_until[peer] = now + self.ban_seconds
            self.scores.pop(peer, None)
            return True
        self.scores[peer] = (score, now)
        return False

    def is_banned(self, peer: str, now: float) -> bool:
        until = self.banned_until.get(peer)
        if until is None:
            return False
        if until <= now:
            del self.banned_until[peer]
            return False
        return True
