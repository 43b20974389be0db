"""`p2p-l2 demo`: `p2p-l2 run` on the built-in demo config (SPEC §3).

Eight node processes: a miner, alice/bob/carol with two payment channels and a
watchtower, a plasma operator with two users.  About a minute of payments, layer-1
transfers, a crash and restart of carol, and bob closing a channel with a stale state,
which the victim (or the tower) punishes.  Parts of the config whose layers are not built
yet (plasma, link shaping) are reported as skipped.
"""

from __future__ import annotations

from pathlib import Path

from .config import builtin_config
from .run import run as run_config


async def run(run_dir: Path | None = None) -> int:
    return await run_config(builtin_config("demo"), run_dir, duration=None)
