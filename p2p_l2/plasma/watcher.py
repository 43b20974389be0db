"""A plasma user's watcher: replays the whole child chain, confirms its own txs, challenges
invalid exits and leaves the chain when the operator misbehaves (DESIGN §6).

Sans-IO: L1 commitments and exits, block data from the operator, the user's own spends and
ticks (`now` in seconds, the L1 height) go in; lists of actions come out: `Fetch`, `Alert`,
`Confirm`, `Challenge`, `StartExit`, `ProcessExits`.  The watcher holds no private key: the
service signs what `Confirm` asks for and builds the L1 txs.
"""

# Design: the watcher keeps the full UTXO set by applying every committed block in number
# order (deposit blocks from their L1 record, child blocks once their data, checked against
# the committed root, is here), so it validates every tx with the same `UtxoSet` rule as the
# operator.  A block with any invalid tx (an input spent, unknown, unsigned, exiting...) is an
# invalid block.  An exit counts against a block only when it started `exit_grace` L1 blocks
# before the block's commitment (an honest operator sees exits late).  On withholding (a
# commitment without data after `withholding_timeout`) or an invalid block the watcher halts:
# it applies nothing more and exits every output it owns as of the last valid block, including
# the inputs of its own txs that never made it into a valid block (their spends are unconfirmed,
# so nobody can challenge those exits), and its deposits committed after that block.
# MVP confirmations: the user confirms each of its txs once it has seen it in a valid block.  An
# output of ours counts (balance, spending, exits) only once the confirmations of all the inputs
# of its tx are here: a payer could still exit an input it did not confirm, the contract wants
# them to exit the output, and the operator to spend it.  Ours come back from the service
# (`own_confirmation`), the others' from the operator.  An exit waits in `_exit_wanted` until
# they are all here; an output whose confirmations never come is never exited (its inputs are
# not ours, or we confirmed them, or they were exited while the tx was pending).  An exit of an
# output the watcher saw spent, with the owner's confirmation, is challenged (retried every
# `retry_blocks` while pending) and raises `unchallenged_exit` when still pending near its
# exitable height.  An exit of an input and an output of the same tx (the payer never confirmed
# it, so nothing can challenge either) raises `invalid_exit` too.  After a voluntary `exit_all`
# the watcher still follows the chain (to challenge, and to exit what it is paid later) but
# confirms nothing more.  Feed L1 events in L1 order (exits before the commitments of later L1
# blocks).

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import LocalProtocolError, RemoteProtocolError
from ..wire.identity import verify
from .ledger import PlasmaRejected, UtxoSet, block_output
from .tx import (
    CHILD_BLOCK_INTERVAL,
    PlasmaBlock,
    PlasmaTx,
    confirm_digest,
    deposit_block,
    pos_block,
    position,
    split_pos,
)

__all__ = [
    "ALERT_KINDS", "EXIT_STATUSES",
    "Alert", "Challenge", "Confirm", "Fetch", "ProcessExits", "StartExit", "Watcher",
]

ALERT_KINDS = ("block_withholding", "invalid_block", "invalid_exit", "unchallenged_exit")
EXIT_STATUSES = ("pending", "challenged", "finalized", "unfunded")
MAX_CONF_FETCHES = 5  # re-fetches of a block for confirmations still missing

# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Fetch:
    """Get block `number`'s data and confirmations from the operator, feed them to on_block."""
    number: int


@dataclass(frozen=True, slots=True)
class Alert:
    """Log `watcher.alert` with `kind` (one of ALERT_KINDS)."""
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Confirm:
    """Our tx is in valid block `number`: sign `digest` with the user's key, send it to the
    operator as the confirmation of each input in `inputs` (the ones we own), and hand it back
    to the watcher, `watcher.own_confirmation(tx_hash, sig)` (or, the same,
    `on_confirmations(number, {tx_hash: [sig if i in inputs else b"" for i in range(n)]})`,
    n = the tx's input count), and carry out the actions that returns: exits of the tx's
    outputs need it (the contract checks the inputs' confirmations)."""
    number: int
    tx_hash: bytes
    root: bytes
    inputs: tuple[int, ...]

    @property
    def digest(self) -> bytes:
        return confirm_digest(self.tx_hash, self.root)


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send a `challenge` call: the exit of `pos` is of an output spent by `spend`."""
    pos: int
    spend: PlasmaTx
    spend_pos: int
    proof: tuple[bytes, ...]
    confirm: bytes


@dataclass(frozen=True, slots=True)
class StartExit:
    """Send a `start_exit` call (with the chain's bond) for our output at `pos`, created by
    `tx` (Merkle `proof`), with `confirms`: (owner, confirmation) per input of `tx`, empty for
    a deposit — start_exit_tx(..., confirms=confirms)."""
    pos: int
    tx: PlasmaTx
    proof: tuple[bytes, ...]
    confirms: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class ProcessExits:
    """One of our exits is due: send a `process_exits` call."""


class _Commit(NamedTuple):
    root: bytes
    l1_height: int
    owner: bytes | None
    amount: int
    seen_at: float


def _is_key(v: Any) -> bool:
    return type(v) is bytes and len(v) == 32


class Watcher:
    """The watcher of user `me` on the plasma chain of operator `chain`."""

    def __init__(self, me: bytes, chain: bytes, exit_blocks: int, withholding_timeout: float, *,
                 exit_grace: int = 6, refetch: float | None = None, retry_blocks: int = 3,
                 max_early: int = 64):
        if not (_is_key(me) and _is_key(chain)):
            raise ValueError("me and chain must be 32-byte keys")
        if type(exit_blocks) is not int or exit_blocks < 1:
            raise ValueError("exit_blocks must be a positive int")
        if not withholding_timeout > 0:
            raise ValueError("withholding_timeout must be positive")
        self.me, self.chain, self.exit_blocks = me, chain, exit_blocks
        self.withholding_timeout = withholding_timeout
        self.exit_grace, self.retry_blocks, self.max_early = exit_grace, retry_blocks, max_early
        self.refetch = withholding_timeout / 4 if refetch is None else refetch
        self.utxos = UtxoSet(chain)
        self.now, self.l1_height = 0.0, 0
        self.halt_reason: str | None = None
        self._frontier = 0                               # the last block applied
        self._commits: dict[int, _Commit] = {}
        self._unapplied: list[int] = []                  # committed numbers > frontier, sorted
        self._data: dict[int, tuple[PlasmaBlock, dict]] = {}   # committed, not applied yet
        self._early: dict[int, tuple[PlasmaBlock, dict]] = {}  # data before its commitment
        self._fetched: dict[int, tuple[float, int]] = {}       # number -> (last Fetch, count)
        self._blocks: dict[int, PlasmaBlock] = {}        # applied blocks
        self._tx_loc: dict[bytes, tuple[int, int]] = {}
        self._confs: dict[bytes, list[bytes]] = {}       # tx hash -> sig per input (b"": none)
        self._own: dict[bytes, PlasmaTx] = {}            # our txs not in a valid block yet
        self._spending: dict[int, bytes] = {}            # our input -> our pending tx
        self._confirmed: set[bytes] = set()              # our txs we sent Confirm for
        self._awaiting: dict[bytes, tuple[int, tuple[bytes, ...]]] = {}  # inputs' confirms
        self._exits: dict[int, dict] = {}                # pos -> last L1 exit record seen
        self._exit_heap: list[tuple[int, int]] = []      # (started, pos) not yet in force
        self._challenged: dict[int, int] = {}            # pos -> L1 height of last Challenge
        self._exit_sent: dict[int, int] = {}             # our pos -> L1 height of StartExit
        self._exit_wanted: set[int] = set()              # our pos to exit once confirmed
        self._alerted: set[tuple[str, int]] = set()
        self._processed_at = -1

    def __repr__(self) -> str:
        return (f"<Watcher {self.me.hex()[:8]} on {self.chain.hex()[:8]} "
                f"frontier={self._frontier} halted={self.halt_reason}>")

    # -- queries ------------------------------------------------------------------------
    @property
    def halted(self) -> bool:
        """True once the watcher left the chain (halt_reason says why): no more transfers or
        confirmations.  After a voluntary `exit_all` it still follows the chain."""
        return self.halt_reason is not None

    @property
    def following(self) -> bool:
        """True while it applies new blocks: not after withholding or an invalid block."""
        return self.halt_reason in (None, "exit")

    @property
    def frontier(self) -> int:
        """The number of the last block applied (0: none)."""
        return self._frontier

    def balance(self) -> tuple[int, list[tuple[int, int]]]:
        """(total, [(pos, amount)]) of our spendable outputs: in a valid block, settled (see
        Design), unspent, not being spent by a tx of ours, not exiting.  Nothing once halted."""
        if self.halted:
            return 0, []
        utxos = sorted((p, a) for p, (o, a) in self.utxos.utxos.items()
                       if o == self.me and self._spendable(p))
        return sum(a for _, a in utxos), utxos

    def spent_outputs(self) -> list[tuple[int, PlasmaTx, tuple[bytes, ...],
                                          tuple[tuple[bytes, bytes], ...]]]:
        """(pos, creating tx, proof, confirms) of our outputs spent by txs we confirmed, oldest
        spend first, each with all it takes to start its exit (as in StartExit): what a
        byzantine user would try to exit (fault.misbehave "exit-spent")."""
        spent = sorted((spend_pos, pos) for pos, spend_pos in self.utxos.spent.items()
                       if self._output_owner(pos) == self.me)
        out = []
        for spend_pos, pos in spent:
            number, tx_index, _ = split_pos(spend_pos)
            made = self._creating(pos)
            if made is None or self._blocks[number].txs[tx_index].hash not in self._confirmed:
                continue
            confirms = self._exit_confirms(made[0])
            if confirms is not None:
                out.append((pos, *made, confirms))
        return out

    def exits(self) -> dict[int, dict]:
        """pos -> the last L1 record seen of every exit of the chain."""
        return {p: dict(r) for p, r in self._exits.items()}

    def make_transfer(self, to: bytes, amount: int, fee: int = 0,
                      candidates: list[tuple[int, int]] | None = None) -> PlasmaTx:
        """An unsigned tx paying `amount` to `to` (one or two of our outputs, change back to
        us).  Sign it, pass it to on_own_spend, then send it.  Raises PlasmaRejected
        (`halted`, `insufficient_funds`) or ValueError.  For many txs at once, pass
        `candidates`: our `balance()` outputs sorted by (amount, pos); the picked ones are
        removed from it (one scan of the UTXO set for the lot, not one per tx)."""
        if not _is_key(to):
            raise ValueError("to must be a 32-byte key")
        if type(amount) is not int or amount <= 0 or type(fee) is not int or fee < 0:
            raise ValueError("amount must be positive and fee >= 0")
        if self.halted:
            raise PlasmaRejected("halted", f"the watcher left the chain ({self.halt_reason})")
        need = amount + fee
        utxos = candidates if candidates is not None else sorted(
            self.balance()[1], key=lambda u: (u[1], u[0]))
        i = bisect_left(utxos, (need, -1), key=lambda u: (u[1], u[0]))
        pick = [utxos[i]] if i < len(utxos) else None
        if pick is None and len(utxos) >= 2 and utxos[-1][1] + utxos[-2][1] >= need:
            pick = utxos[-2:]
        if pick is None:
            biggest = [a for _, a in utxos[-2:]]
            raise PlasmaRejected("insufficient_funds",
                                 f"need {need} from at most 2 outputs; the largest: {biggest}")
        if candidates is not None:
            for u in pick:
                candidates.remove(u)
        change = sum(a for _, a in pick) - need
        outputs = ((to, amount),) + (((self.me, change),) if change else ())
        return PlasmaTx(self.chain, tuple(p for p, _ in pick), outputs)

    # -- inputs from L1 -------------------------------------------------------------------
    def on_commitment(self, number: int, root: bytes, l1_height: int, owner: bytes | None,
                      amount: int, now: float) -> list:
        """Block `number` is committed on L1 (deposit blocks carry their `owner` and `amount`).
        Feed commitments in L1 order; returns actions (Fetch for missing data, ...)."""
        if type(number) is not int or number <= 0 or not _is_key(root) \
                or type(l1_height) is not int or l1_height < 0:
            raise ValueError("on_commitment: bad number, root or l1_height")
        self.now = max(self.now, now)
        known = self._commits.get(number)
        if known is not None:
            if known.root != root:
                raise LocalProtocolError(f"block {number} committed twice with different roots")
            return []
        if number <= self._frontier:
            raise LocalProtocolError(f"commitment of block {number} below the applied "
                                     f"block {self._frontier}: feed L1 in order")
        actions: list = []
        deposit = number % CHILD_BLOCK_INTERVAL != 0
        if deposit:
            if not _is_key(owner) or type(amount) is not int or amount <= 0:
                raise ValueError(f"deposit block {number}: bad owner or amount")
            block = deposit_block(self.chain, number, owner, amount)
            if block.root != root:
                raise LocalProtocolError(f"deposit block {number}: root does not match")
            self._data[number] = (block, {})
        self._commits[number] = _Commit(root, l1_height, owner if deposit else None,
                                        amount if deposit else 0, now)
        insort(self._unapplied, number)
        if deposit:
            if self.halted and owner == self.me:
                actions += self._start_exits([position(number, 0, 0)])
        elif number in self._early:
            block, confs = self._early.pop(number)
            if block.root == root:
                self._data[number] = (block, confs)
        if not deposit and number not in self._data and self.following:
            actions.append(self._fetch(number))
        return actions + self._advance()

    def on_exit(self, record: dict) -> list:
        """An exit as the L1 state shows it (a dict of `exits(state, operator)`: pos, owner,
        amount, status, started, exitable_at).  Call it for new exits and status changes."""
        rec = _exit_record(record, self.exit_blocks)
        pos = rec["pos"]
        first = pos not in self._exits
        self._exits[pos] = rec
        actions: list = []
        if first:
            heapq.heappush(self._exit_heap, (rec["started"], pos))
            if rec["owner"] == self.me:
                self._exit_sent.setdefault(pos, self.l1_height)
        if rec["status"] == "pending" and rec["owner"] != self.me:
            actions += self._try_challenge(pos)
            if pos not in self._challenged and pos_block(pos) <= self._frontier \
                    and pos not in self.utxos and pos not in self.utxos.spent:
                actions += self._alert("invalid_exit", pos,
                                       f"exit of {pos}: not an output of a valid block")
            if first:
                actions += self._check_double_exit(pos)
        return actions

    # -- inputs from the operator and the user ------------------------------------------
    def on_block(self, block: PlasmaBlock, confirmations: Any, now: float) -> list:
        """Block data (and its confirmations: tx hash -> sig per input, b"" if missing) from
        the operator.  Raises RemoteProtocolError if it does not match the L1 commitment;
        data that comes before its commitment is kept (a bounded number of blocks)."""
        if not isinstance(block, PlasmaBlock):
            raise RemoteProtocolError("bad_plasma_block", "expected a PlasmaBlock")
        self.now = max(self.now, now)
        confs = _clean_confirmations(confirmations)
        number = block.number
        if number % CHILD_BLOCK_INTERVAL:
            return []  # deposit blocks come from L1
        commit = self._commits.get(number)
        if commit is None:
            if number > self._frontier and (number in self._early
                                            or len(self._early) < self.max_early):
                self._early[number] = (block, confs)
            return []
        if block.root != commit.root:
            raise RemoteProtocolError("bad_plasma_block",
                                      f"block {number}: root differs from the L1 commitment")
        if number in self._blocks:
            return self._merge_confirmations(number, confs)
        if not self.following:
            return []
        if number in self._data:
            _fill(self._data[number][1], confs)
        else:
            self._data[number] = (block, confs)
        return self._advance()

    def on_confirmations(self, number: int, confirmations: Any) -> list:
        """More confirmations for block `number` (tx hash -> sig per input), e.g. pushed by
        the operator as spenders confirm.  Raises RemoteProtocolError if not a map."""
        confs = _clean_confirmations(confirmations)
        if number in self._blocks:
            return self._merge_confirmations(number, confs)
        held = self._data.get(number) or self._early.get(number)
        if held is not None:
            _fill(held[1], confs)
        return []

    def confirmations_of(self, tx_hash: bytes) -> tuple[int, tuple[bytes, ...]] | None:
        """(block number, sig per input, b"" where missing) of a tx in a block we applied."""
        loc = self._tx_loc.get(tx_hash)
        sigs = self._confs.get(tx_hash)
        return None if loc is None or not sigs else (loc[0], tuple(sigs))

    def own_confirmation(self, tx_hash: bytes, sig: bytes) -> list:
        """The service signed a `Confirm` of ours: `sig` is our confirmation of tx `tx_hash`,
        for every input of it we own.  Returns actions (exits that waited for it)."""
        loc = self._tx_loc.get(tx_hash) if type(tx_hash) is bytes else None
        if loc is None or type(sig) is not bytes or len(sig) != 64:
            return []
        number, tx_index = loc
        tx = self._blocks[number].txs[tx_index]
        sigs = [sig if self._output_owner(p) == self.me else b"" for p in tx.inputs]
        return self._merge_confirmations(number, {tx_hash: tuple(sigs)})

    def on_own_spend(self, tx: PlasmaTx) -> None:
        """The user signed `tx` and is sending it: its inputs are ours and now "spending,
        unconfirmed".  Raises PlasmaRejected if they are not spendable outputs of ours."""
        if self.halted:
            raise PlasmaRejected("halted", f"the watcher left the chain ({self.halt_reason})")
        if not isinstance(tx, PlasmaTx) or tx.chain != self.chain or not tx.inputs:
            raise PlasmaRejected("malformed", "not a tx of this chain with inputs")
        if tx.hash in self._own:
            return
        for pos in tx.inputs:
            utxo = self.utxos.get(pos)
            if utxo is None or utxo[0] != self.me or not self._spendable(pos):
                raise PlasmaRejected("unknown_input", f"input {pos} is not a spendable output "
                                                      "of ours")
        self._own[tx.hash] = tx
        for pos in tx.inputs:
            self._spending[pos] = tx.hash

    def forget_spend(self, tx_hash: bytes) -> bool:
        """The operator refused our tx (or it is abandoned): its inputs are spendable again.
        If it shows up in a valid block all the same, it is confirmed as usual."""
        tx = self._own.pop(tx_hash, None)
        if tx is None:
            return False
        for pos in tx.inputs:
            if self._spending.get(pos) == tx_hash:
                del self._spending[pos]
        return True

    def exit_all(self) -> list:
        """Leave the chain: halt and exit every output we own as of the last valid block
        (including inputs of our unconfirmed txs) and our later deposits.  Idempotent."""
        if self.halt_reason is None:
            self.halt_reason = "exit"
        mine = [p for p, (o, _) in self.utxos.utxos.items() if o == self.me]
        mine += [position(n, 0, 0) for n in self._unapplied
                 if n % CHILD_BLOCK_INTERVAL and self._commits[n].owner == self.me]
        return self._start_exits(sorted(mine))

    def exit(self, pos: int) -> list:
        """Exit one spendable output of ours (the chain stays in use)."""
        utxo = self.utxos.get(pos) if type(pos) is int else None
        if utxo is None or utxo[0] != self.me or not self._spendable(pos):
            raise PlasmaRejected("unknown_input", f"{pos!r} is not a spendable output of ours")
        return self._start_exits([pos])

    def tick(self, now: float, l1_height: int) -> list:
        """Time passes: detect withholding, re-fetch, retry challenges and exits, ask for
        process_exits when one of our exits is due."""
        self.now, self.l1_height = max(self.now, now), max(self.l1_height, l1_height)
        now, height = self.now, self.l1_height
        actions: list = []
        if self.following:
            missing = [n for n in self._unapplied if n not in self._data]
            late = [n for n in missing
                    if now - self._commits[n].seen_at >= self.withholding_timeout]
            if late:
                waited = now - self._commits[late[0]].seen_at
                actions += self._halt("block_withholding", late[0], f"block {late[0]}: no data "
                                      f"{waited:.3g} s after its commitment")
            else:
                for n in missing:
                    if now - self._fetched.get(n, (-1e18, 0))[0] >= self.refetch:
                        actions.append(self._fetch(n))
                for n in sorted({n for n, _ in self._awaiting.values()}):
                    last, count = self._fetched.get(n, (-1e18, 0))
                    if now - last >= self.refetch and count < MAX_CONF_FETCHES:
                        actions.append(self._fetch(n))
        margin = max(1, self.exit_blocks // 4)
        for pos, sent in list(self._challenged.items()):
            rec = self._exits[pos]
            if rec["status"] != "pending":
                continue
            if height >= rec["exitable_at"] - margin:
                actions += self._alert("unchallenged_exit", pos,
                                       f"exit of spent output {pos} still pending at height "
                                       f"{height}, exitable at {rec['exitable_at']}")
            if height >= sent + self.retry_blocks and height < rec["exitable_at"]:
                actions += self._try_challenge(pos, retry=True)
        retry = [p for p, sent in self._exit_sent.items()
                 if p not in self._exits and height >= sent + self.retry_blocks]
        for pos in retry:
            del self._exit_sent[pos]
        actions += self._start_exits(retry)
        due = any(r["owner"] == self.me and r["status"] == "pending"
                  and r["exitable_at"] <= height for r in self._exits.values())
        if due and height > self._processed_at:
            self._processed_at = height
            actions.append(ProcessExits())
        return actions

    # -- internals ----------------------------------------------------------------------
    def _spendable(self, pos: int) -> bool:
        if pos in self._exits or pos in self._exit_sent or pos in self._spending \
                or pos in self._exit_wanted:
            return False
        number, tx_index, _ = split_pos(pos)
        block = self._blocks.get(number)
        return block is not None and block.txs[tx_index].hash not in self._awaiting

    def _fetch(self, number: int) -> Fetch:
        _, count = self._fetched.get(number, (0.0, 0))
        self._fetched[number] = (self.now, count + 1)
        return Fetch(number)

    def _alert(self, kind: str, key: int, detail: str) -> list:
        if (kind, key) in self._alerted:
            return []
        self._alerted.add((kind, key))
        return [Alert(kind, detail)]

    def _halt(self, kind: str, number: int, detail: str) -> list:
        actions = self._alert(kind, number, detail)
        self.halt_reason = kind
        return actions + self.exit_all()

    def _creating(self, pos: int) -> tuple[PlasmaTx, tuple[bytes, ...]] | None:
        """The tx that created output `pos` and its Merkle proof, from a block we hold."""
        number, tx_index, _ = split_pos(pos)
        block = self._blocks.get(number) or self._data.get(number, (None,))[0]
        if block is None or tx_index >= len(block.txs):
            return None
        return block.txs[tx_index], tuple(block.proof(tx_index))

    def _exit_confirms(self, tx: PlasmaTx) -> tuple[tuple[bytes, bytes], ...] | None:
        """(owner, confirmation) per input of `tx` (an applied tx, or a deposit: ()), as the
        contract's start_exit wants them; None while any is missing."""
        confirms = []
        for k, p in enumerate(tx.inputs):
            owner = self._output_owner(p)
            if owner is None or not self._conf_ok(tx.hash, k, owner):
                return None
            confirms.append((owner, self._confs[tx.hash][k]))
        return tuple(confirms)

    def _start_exits(self, positions: list[int]) -> list:
        """StartExit for each of our `positions` not exiting yet; one whose tx's inputs are not
        all confirmed (e.g. paid to us, the payer did not confirm) waits in _exit_wanted."""
        actions = []
        for pos in positions:
            if pos in self._exits or pos in self._exit_sent:
                continue  # never exit an output twice
            made = self._creating(pos)
            if made is None:
                continue
            confirms = self._exit_confirms(made[0])
            if confirms is None:
                self._exit_wanted.add(pos)
                continue
            self._exit_wanted.discard(pos)
            self._exit_sent[pos] = self.l1_height
            actions.append(StartExit(pos, *made, confirms))
        return actions

    def _advance(self) -> list:
        """Apply every committed block whose turn has come and whose data is here."""
        actions: list = []
        while self.following and self._unapplied and self._unapplied[0] in self._data:
            number = self._unapplied[0]
            block, confs = self._data[number]
            commit = self._commits[number]
            if number % CHILD_BLOCK_INTERVAL:
                self.utxos.add_deposit(number, commit.owner, commit.amount)
            else:
                while self._exit_heap and self._exit_heap[0][0] + self.exit_grace \
                        <= commit.l1_height:
                    self.utxos.exiting.add(heapq.heappop(self._exit_heap)[1])
                problems = self.utxos.apply_block(block, sigs=True, atomic=True)
                if problems:
                    i, exc = problems[0]
                    return actions + self._halt(
                        "invalid_block", number,
                        f"block {number} tx {i}: {exc.reason}: {exc.detail}")
            del self._data[number]
            self._unapplied.pop(0)
            self._fetched.pop(number, None)
            self._blocks[number] = block
            self._frontier = number
            if not number % CHILD_BLOCK_INTERVAL:
                actions += self._on_applied(block, confs)
        return actions

    def _on_applied(self, block: PlasmaBlock, confs: dict) -> list:
        actions: list = []
        for i, tx in enumerate(block.txs):
            self._tx_loc[tx.hash] = (block.number, i)
            owners = tuple(self._output_owner(p) for p in tx.inputs)
            mine = tuple(k for k, o in enumerate(owners) if o == self.me)
            if mine and not self.halted:  # after leaving, we exit inputs: never confirm
                actions.append(Confirm(block.number, tx.hash, block.root, mine))
                self._confirmed.add(tx.hash)
                self._own.pop(tx.hash, None)
            for pos in tx.inputs:
                other = self._spending.pop(pos, None)
                if other is not None and other != tx.hash:
                    self.forget_spend(other)  # an earlier tx of ours lost the race
            if any(o == self.me for o, _ in tx.outputs) and not self._settled(tx.hash, owners):
                self._awaiting[tx.hash] = (block.number, owners)
        actions += self._merge_confirmations(block.number, confs)
        if self.halted:  # left voluntarily, still following: what we receive exits too
            actions += self._start_exits([position(block.number, i, oi)
                                          for i, tx in enumerate(block.txs)
                                          for oi, (o, _) in enumerate(tx.outputs)
                                          if o == self.me])
        for tx in block.txs:  # exits of outputs this block spends
            for pos in tx.inputs:
                if pos in self._exits:
                    actions += self._try_challenge(pos)
        return actions

    def _output_owner(self, pos: int) -> bytes | None:
        out = block_output(self._blocks, pos)
        return None if out is None else out[0]

    def _settled(self, tx_hash: bytes, owners: tuple[bytes | None, ...]) -> bool:
        """We hold every input owner's confirmation of the tx (ours once the service handed
        it back): its outputs can exit, and the operator lets them be spent."""
        return all(self._conf_ok(tx_hash, k, o) for k, o in enumerate(owners))

    def _conf_ok(self, tx_hash: bytes, k: int, owner: bytes | None) -> bool:
        sigs = self._confs.get(tx_hash)
        loc = self._tx_loc.get(tx_hash)
        if not sigs or k >= len(sigs) or not sigs[k] or loc is None or owner is None:
            return False
        root = self._blocks[loc[0]].root
        return verify(owner, confirm_digest(tx_hash, root), sigs[k])

    def _merge_confirmations(self, number: int, confs: dict) -> list:
        actions: list = []
        block = self._blocks[number]
        for tx_hash, sigs in confs.items():
            loc = self._tx_loc.get(tx_hash)
            if loc is None or loc[0] != number:
                continue
            tx = block.txs[loc[1]]
            if len(sigs) != len(tx.inputs):
                continue
            cur = self._confs.setdefault(tx_hash, [b""] * len(tx.inputs))
            for k, sig in enumerate(sigs):
                if sig and sig != cur[k] and (
                        not cur[k] or not self._conf_ok(tx_hash, k,
                                                        self._output_owner(tx.inputs[k]))):
                    cur[k] = sig
            waiting = self._awaiting.get(tx_hash)
            if waiting is not None and self._settled(tx_hash, waiting[1]):
                del self._awaiting[tx_hash]
            wanted = [p for p in (position(number, loc[1], oi) for oi in range(len(tx.outputs)))
                      if p in self._exit_wanted]
            if wanted:
                actions += self._start_exits(wanted)
            for pos in tx.inputs:
                if pos in self._exits:
                    actions += self._try_challenge(pos)
        return actions

    def _try_challenge(self, pos: int, retry: bool = False) -> list:
        """A Challenge (and the invalid_exit alert) if the pending exit of `pos` is of an
        output spent in a valid block with its owner's confirmation."""
        rec = self._exits[pos]
        if rec["status"] != "pending" or rec["owner"] == self.me:
            return []
        if pos in self._challenged and not retry:
            return []
        spend_pos = self.utxos.spent.get(pos)
        if spend_pos is None:
            return []
        number, tx_index, _ = split_pos(spend_pos)
        block = self._blocks[number]
        spend = block.txs[tx_index]
        k = spend.inputs.index(pos)
        if not self._conf_ok(spend.hash, k, rec["owner"]):
            return []
        self._challenged[pos] = self.l1_height
        actions = self._alert("invalid_exit", pos, f"exit of {pos}: spent by tx {tx_index} of "
                                                   f"block {number}, confirmed")
        return actions + [Challenge(pos, spend, spend_pos, tuple(block.proof(tx_index)),
                                    self._confs[spend.hash][k])]

    def _check_double_exit(self, pos: int) -> list:
        """Alert (nothing to challenge with) when an input and an output of the same tx both
        exit: the payer never confirmed the tx, yet takes its value twice."""
        number, tx_index, _ = split_pos(pos)
        block = self._blocks.get(number)
        tx = block.txs[tx_index] if block is not None and tx_index < len(block.txs) else None
        if tx is not None and any(p in self._exits for p in tx.inputs):
            return self._alert("invalid_exit", pos, f"exit of {pos}: an input of the tx that "
                                                    "made it exits too (double exit)")
        spend_pos = self.utxos.spent.get(pos)
        if spend_pos is not None:
            number, tx_index, _ = split_pos(spend_pos)
            outs = len(self._blocks[number].txs[tx_index].outputs)
            if any(spend_pos + oi in self._exits for oi in range(outs)):
                return self._alert("invalid_exit", pos, f"exit of {pos}: an output of the tx "
                                                        "that spent it exits too (double exit)")
        return []


def _exit_record(record: Any, exit_blocks: int) -> dict:
    """A checked copy of an L1 exit record; ValueError if it is malformed."""
    if not isinstance(record, dict):
        raise ValueError("exit record: expected a dict")
    pos, owner, amount = record.get("pos"), record.get("owner"), record.get("amount")
    status, exitable_at = record.get("status"), record.get("exitable_at")
    if type(pos) is not int or pos <= 0 or not _is_key(owner) or type(amount) is not int \
            or status not in EXIT_STATUSES or type(exitable_at) is not int:
        raise ValueError(f"exit record: bad fields in {record!r}")
    started = record.get("started")
    if type(started) is not int:  # the latest start its exitable height allows
        started = exitable_at - exit_blocks
    return {"pos": pos, "owner": owner, "amount": amount, "status": status,
            "started": started, "exitable_at": exitable_at}


def _fill(held: dict, confs: dict) -> None:
    """Merge `confs` into confirmations `held` for a block not applied yet (empty slots only;
    conflicts are settled by verification once the block is applied)."""
    for h, sigs in confs.items():
        cur = held.get(h)
        if cur is None or len(cur) != len(sigs):
            held[h] = sigs
        else:
            held[h] = tuple(c or s for c, s in zip(cur, sigs))


def _clean_confirmations(confs: Any) -> dict[bytes, tuple[bytes, ...]]:
    """Well-formed entries of a confirmations map from the operator (the rest is dropped)."""
    if confs is None:
        return {}
    if not isinstance(confs, dict):
        raise RemoteProtocolError("bad_plasma_confirmations", "expected a map")
    out = {}
    for h, sigs in confs.items():
        if _is_key(h) and isinstance(sigs, (list, tuple)) and 0 < len(sigs) <= 2 \
                and all(type(s) is bytes and len(s) in (0, 64) for s in sigs):
            out[h] = tuple(sigs)
    return out
