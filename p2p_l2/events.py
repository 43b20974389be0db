"""The event catalogue: every event name a node or the launcher logs (SPEC §6).

Names are constants here and nowhere else, so the README, the analysis and the tests
agree on them.  `CATALOGUE` maps each name to a one-line description; the README's
event table is generated from it (`python -m p2p_l2.events`).
"""

from __future__ import annotations

# node lifecycle
NODE_STARTED = "node.started"
NODE_LISTENING = "node.listening"
NODE_STOPPED = "node.stopped"
NODE_ERROR = "node.error"
# peers and wire
PEER_CONNECTED = "peer.connected"
PEER_DISCONNECTED = "peer.disconnected"
PEER_BANNED = "peer.banned"
PEER_DIAL_FAILED = "peer.dial_failed"
MSG_REJECTED = "msg.rejected"
# gossip
GOSSIP_PUBLISHED = "gossip.published"
GOSSIP_DELIVERED = "gossip.delivered"
# control API
CONTROL_ERROR = "control.error"
# launcher (RUN/launcher.jsonl)
LAUNCHER_UP = "launcher.up"
LAUNCHER_DOWN = "launcher.down"
PROCESS_STARTED = "process.started"
PROCESS_KILLED = "process.killed"
PROCESS_PAUSED = "process.paused"
PROCESS_RESUMED = "process.resumed"
PROCESS_EXITED = "process.exited"
# workloads
WORKLOAD_STARTED = "workload.started"
WORKLOAD_STOPPED = "workload.stopped"
# faults
FAULT_APPLIED = "fault.applied"
FAULT_CLEARED = "fault.cleared"
# layer 1 (issue 3)
BLOCK_MINED = "block.mined"
BLOCK_ACCEPTED = "block.accepted"
CHAIN_REORG = "chain.reorg"
CHAIN_LOADED = "chain.loaded"
TX_ACCEPTED = "tx.accepted"
TX_DROPPED = "tx.dropped"
# channels (issue 4)
CHANNEL_OPENING = "channel.opening"
CHANNEL_OPENED = "channel.opened"
CHANNEL_UPDATED = "channel.updated"
CHANNEL_CLOSING = "channel.closing"
CHANNEL_PENALIZED = "channel.penalized"
CHANNEL_SETTLED = "channel.settled"
PAYMENT_SENT = "payment.sent"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
# plasma (issue 5)
PLASMA_BLOCK_MADE = "plasma.block.made"
PLASMA_BLOCK_COMMITTED = "plasma.block.committed"
PLASMA_TX_REJECTED = "plasma.tx.rejected"
PLASMA_EXIT_STARTED = "plasma.exit.started"
PLASMA_EXIT_CHALLENGED = "plasma.exit.challenged"
PLASMA_EXIT_FINALIZED = "plasma.exit.finalized"
WATCHER_ALERT = "watcher.alert"

CATALOGUE: dict[str, str] = {
    NODE_STARTED: "process up, before listening (fields: pubkey, roles, pid)",
    NODE_LISTENING: "P2P and control sockets bound (fields: port, control_port)",
    NODE_STOPPED: "clean shutdown finished",
    NODE_ERROR: "an unexpected exception in a service; the node goes on where it can (error)",
    PEER_CONNECTED: "handshake done with a peer (peer, direction, addr)",
    PEER_DISCONNECTED: "a peer link closed (peer, reason)",
    PEER_BANNED: "misbehaviour score crossed the limit; peer refused until `until` (peer, reason, until)",
    PEER_DIAL_FAILED: "an outbound dial failed; retried with backoff (peer, attempt, delay, error)",
    MSG_REJECTED: "bad input refused: frame, handshake, gossip object or control request (peer?, addr?, reason, detail, stage?, kind?)",
    GOSSIP_PUBLISHED: "this node originated a gossip message (msg_id, topic, size)",
    GOSSIP_DELIVERED: "a gossip message reached this node for the first time (msg_id, topic, hops, origin)",
    CONTROL_ERROR: "a control request was refused (method, code, message)",
    LAUNCHER_UP: "launcher: every node listening and every link up (nodes, seconds)",
    LAUNCHER_DOWN: "launcher: every node of the run stopped",
    PROCESS_STARTED: "launcher: a node process spawned (node, pid)",
    PROCESS_KILLED: "launcher: SIGKILL sent (node, pid)",
    PROCESS_PAUSED: "launcher: SIGSTOP sent (node, pid)",
    PROCESS_RESUMED: "launcher: SIGCONT sent (node, pid)",
    PROCESS_EXITED: "launcher: a node process ended (node, pid, returncode)",
    WORKLOAD_STARTED: "a load generator started on this node (workload, kind, rate)",
    WORKLOAD_STOPPED: "a load generator ended (workload, kind, counts by result code, seconds)",
    FAULT_APPLIED: "a fault took effect on this node (action, params)",
    FAULT_CLEARED: "a fault was lifted on this node (action)",
    BLOCK_MINED: "this miner produced a block (block, height, txs)",
    BLOCK_ACCEPTED: "a block joined this node's block tree (block, height, miner)",
    CHAIN_REORG: "the best chain switched branches (depth, old_tip, new_tip, height)",
    CHAIN_LOADED: "layer 1 opened from the node's database at start (height, tip, blocks)",
    TX_ACCEPTED: "a transaction entered the mempool (txid)",
    TX_DROPPED: "one of our own txs can never be mined: replaced by a self-transfer at its nonce (txid, reason, replaced_by)",
    CHANNEL_OPENING: "the opener posted a channel's funding to L1 (channel_id, peer, txid, capacity)",
    CHANNEL_OPENED: "a channel is usable (channel_id, peer, capacity)",
    CHANNEL_UPDATED: "a channel state was committed (channel_id, seq, bal_a, bal_b, htlcs; sampled: at most one every 0.5 s a channel)",
    CHANNEL_CLOSING: "a channel close was posted to L1 (channel_id, kind)",
    CHANNEL_PENALIZED: "a stale close was punished (channel_id)",
    CHANNEL_SETTLED: "a channel's funds were paid out on L1 (channel_id)",
    PAYMENT_SENT: "a payment left the payer (payment_hash, amount)",
    PAYMENT_SUCCEEDED: "a payment settled (payment_hash, latency, fee, hops)",
    PAYMENT_FAILED: "a payment failed (payment_hash, reason)",
    PLASMA_BLOCK_MADE: "the operator made a child block and sent its root to L1 (number, txs, invalid)",
    PLASMA_BLOCK_COMMITTED: "operator: a child block's root reached L1 (number, height)",
    PLASMA_TX_REJECTED: "a plasma tx was refused by the operator (tx_hash, reason)",
    PLASMA_EXIT_STARTED: "a plasma exit was posted by its owner (pos, amount, txid; spent=true: a byzantine exit of a spent output)",
    PLASMA_EXIT_CHALLENGED: "a watcher challenged an exit of a spent output (pos, txid)",
    PLASMA_EXIT_FINALIZED: "one of our plasma exits paid out on L1 (pos, amount)",
    WATCHER_ALERT: "a plasma watcher saw misbehaviour (kind: block_withholding | invalid_block | invalid_exit | unchallenged_exit, detail)",
}


def markdown_table() -> str:
    rows = ["| event | meaning |", "| --- | --- |"]
    rows += [f"| `{name}` | {doc} |" for name, doc in CATALOGUE.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
