"""Merkle trees, headers and blocks: hashing, proofs, signatures, strict wire decoding."""

from __future__ import annotations

import math
from dataclasses import replace
from hashlib import blake2b

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_l2.chain import block as block_mod
from p2p_l2.chain.block import Block, Header, genesis, make_block
from p2p_l2.chain.merkle import EMPTY_ROOT, merkle_proof, merkle_root, verify_proof
from p2p_l2.chain.tx import transfer
from p2p_l2.errors import RemoteProtocolError
from p2p_l2.wire.identity import Identity

NET = "blocks-test"
ALICE = Identity.derive(7, "alice")
MINER = Identity.derive(7, "miner")
OTHER = Identity.derive(7, "other")


def leaves(n: int) -> list[bytes]:
    return [blake2b(i.to_bytes(4, "big"), digest_size=32).digest() for i in range(n)]


def txs(n: int, start: int = 0):
    return [transfer(ALICE, NET, MINER.pubkey, 1, start + i) for i in range(n)]


def roundtrip(d):
    return msgpack.unpackb(msgpack.packb(d, use_bin_type=True), raw=False)


# ---------------------------------------------------------------- merkle


def test_merkle_empty_and_single():
    assert merkle_root([]) == EMPTY_ROOT == bytes(32)
    (x,) = leaves(1)
    assert merkle_root([x]) != x  # leaves are hashed with their own tag
    assert merkle_proof([x], 0) == []
    assert verify_proof(x, 0, [], merkle_root([x]))


@pytest.mark.parametrize("n", range(1, 18))
def test_merkle_proofs_every_index(n):
    ls = leaves(n)
    root = merkle_root(ls)
    for i in range(n):
        proof = merkle_proof(ls, i)
        assert verify_proof(ls[i], i, proof, root)
        assert not verify_proof(ls[i], i ^ 1, proof, root) or n == 1
        assert not verify_proof(ls[(i + 1) % n], i, proof, root) or n == 1
        assert not verify_proof(ls[i], i, proof, bytes(32))


def test_merkle_duplication_is_not_ambiguous():
    """CVE-2012-2459: with plain duplication [a,b,c] and [a,b,c,c] share a root."""
    a, b, c = leaves(3)
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    six = leaves(6)  # one level up: Bitcoin gives [1..6] and [1..6, 5, 6] the same root
    assert merkle_root(six) != merkle_root(six + six[4:])
    # a node cannot pose as a leaf: the root of [a, b] differs from the root of [node]
    node = blake2b(b"\x01" + blake2b(b"\x00" + a, digest_size=32).digest()
                   + blake2b(b"\x00" + b, digest_size=32).digest(), digest_size=32).digest()
    assert merkle_root([a, b]) != merkle_root([node])


def test_merkle_proof_index_out_of_range():
    with pytest.raises(IndexError):
        merkle_proof(leaves(3), 3)
    with pytest.raises(IndexError):
        merkle_proof([], 0)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40), st.data())
@settings(max_examples=60, deadline=None)
def test_merkle_proof_hypothesis(ls, data):
    root = merkle_root(ls)
    i = data.draw(st.integers(0, len(ls) - 1))
    proof = merkle_proof(ls, i)
    assert verify_proof(ls[i], i, proof, root)
    if proof:  # any tampered step breaks it
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = bytes(32) if bad[j] != bytes(32) else b"\x01" * 32
        assert not verify_proof(ls[i], i, bad, root)
        assert not verify_proof(ls[i], i, proof[:-1], root)
    assert not verify_proof(ls[i], i + (1 << len(proof)), proof, root)


@given(st.lists(st.one_of(st.binary(max_size=40), st.integers(), st.none()), max_size=6),
       st.one_of(st.integers(), st.none(), st.text()))
def test_verify_proof_never_raises(proof, index):
    assert verify_proof(b"x", index, proof, bytes(32)) in (True, False)


# ---------------------------------------------------------------- header


def header(**kw) -> Header:
    base = dict(height=3, prev=b"\x01" * 32, time=12.5, miner=MINER.pubkey, merkle=b"\x02" * 32)
    base.update(kw)
    return Header(**base)


def test_header_hash_covers_every_field():
    h = header()
    assert len(h.hash) == 32 and h.hash == header().hash
    for kw in (dict(height=4), dict(prev=b"\x03" * 32), dict(time=12.75),
               dict(miner=OTHER.pubkey), dict(merkle=b"\x04" * 32)):
        assert header(**kw).hash != h.hash


def test_header_wire_roundtrip():
    h = header()
    w = roundtrip(h.to_wire())
    assert set(w) == {"n", "p", "t", "m", "r"}
    assert Header.from_wire(w) == h and Header.from_wire(w).hash == h.hash


@pytest.mark.parametrize("mutate", [
    lambda w: [w],
    lambda w: {**w, "z": 1},
    lambda w: {k: v for k, v in w.items() if k != "t"},
    lambda w: {**w, "n": True},
    lambda w: {**w, "n": -1},
    lambda w: {**w, "n": 2**63},
    lambda w: {**w, "n": "3"},
    lambda w: {**w, "t": 12},
    lambda w: {**w, "t": math.nan},
    lambda w: {**w, "t": math.inf},
    lambda w: {**w, "p": b"\x01" * 31},
    lambda w: {**w, "m": "ab" * 16},
    lambda w: {**w, "r": None},
])
def test_header_from_wire_strict(mutate):
    with pytest.raises(RemoteProtocolError) as exc:
        Header.from_wire(mutate(header().to_wire()))
    assert exc.value.reason == "bad_block"


# ---------------------------------------------------------------- block


def test_make_block_and_roundtrip():
    g = genesis(NET)
    b = make_block(MINER, g.header, txs(3), 5)
    assert b.height == 1 and b.header.prev == g.hash and b.header.time == 5.0
    assert b.hash == b.header.hash and b.header.miner == MINER.pubkey
    assert b.verify_sig() and b.merkle_ok()
    w = roundtrip(b.to_wire())
    assert set(w) == {"h", "s", "x"}
    b2 = Block.from_wire(w, 10)
    assert b2 == b and b2.hash == b.hash and b2.verify_sig() and b2.merkle_ok()
    assert [t.txid for t in b2.txs] == [t.txid for t in b.txs]


def test_empty_block_merkle():
    b = make_block(MINER, genesis(NET).header, [], 1.0)
    assert b.header.merkle == EMPTY_ROOT and b.merkle_ok()


def test_signature_checks():
    b = make_block(MINER, genesis(NET).header, txs(2), 1.0)
    forged = replace(b, sig=OTHER.sign(block_mod.SIG_DOMAIN + b.hash))
    assert not forged.verify_sig()
    flipped = replace(b, sig=bytes([b.sig[0] ^ 1]) + b.sig[1:])
    assert not flipped.verify_sig()
    moved = replace(b, header=replace(b.header, time=2.0))  # header changed, old signature
    assert not moved.verify_sig()
    other_miner = replace(b, header=replace(b.header, miner=OTHER.pubkey))
    assert not other_miner.verify_sig()
    # the signature covers the domain tag: a bare signature of the hash does not verify
    assert not replace(b, sig=MINER.sign(b.hash)).verify_sig()


def test_merkle_ok_detects_changed_txs():
    b = make_block(MINER, genesis(NET).header, txs(3), 1.0)
    assert not replace(b, txs=b.txs[:2]).merkle_ok()
    assert not replace(b, txs=b.txs[::-1]).merkle_ok()
    assert not replace(b, txs=b.txs + (txs(1, 3)[0],)).merkle_ok()


def wire_block(n=2):
    return roundtrip(make_block(MINER, genesis(NET).header, txs(n), 1.0).to_wire())


def test_from_wire_too_many_txs():
    w = wire_block(3)
    assert Block.from_wire(w, 3)
    with pytest.raises(RemoteProtocolError, match="3 txs > max 2") as exc:
        Block.from_wire(w, 2)
    assert exc.value.reason == "bad_block"


def test_from_wire_duplicate_txids():
    w = wire_block(2)
    w["x"].append(w["x"][0])
    with pytest.raises(RemoteProtocolError, match="duplicate txid") as exc:
        Block.from_wire(w, 10)
    assert exc.value.reason == "bad_block"


def test_from_wire_bad_tx_becomes_bad_block():
    w = wire_block(2)
    w["x"][1] = {**w["x"][1], "n": -5}
    with pytest.raises(RemoteProtocolError, match=r"x\[1\]") as exc:
        Block.from_wire(w, 10)
    assert exc.value.reason == "bad_block"


def test_from_wire_size_limit(monkeypatch):
    w = wire_block(5)
    monkeypatch.setattr(block_mod, "MAX_BLOCK_BYTES", block_mod.HEADER_BYTES + 300)
    with pytest.raises(RemoteProtocolError, match="larger than") as exc:
        Block.from_wire(w, 10)
    assert exc.value.reason == "bad_block"


@pytest.mark.parametrize("mutate", [
    lambda w: None,
    lambda w: [w["h"], w["s"], w["x"]],
    lambda w: {**w, "extra": 1},
    lambda w: {k: v for k, v in w.items() if k != "s"},
    lambda w: {**w, "s": w["s"][:63]},
    lambda w: {**w, "s": w["s"].hex()},
    lambda w: {**w, "x": tuple(w["x"])},
    lambda w: {**w, "x": {"0": 1}},
    lambda w: {**w, "x": [1]},
    lambda w: {**w, "h": {**w["h"], "n": 1.0}},
])
def test_block_from_wire_strict(mutate):
    with pytest.raises(RemoteProtocolError) as exc:
        Block.from_wire(mutate(wire_block()), 10)
    assert exc.value.reason == "bad_block"


def test_genesis_same_per_network_different_across():
    g1, g2 = genesis(NET), genesis(NET)
    assert g1 == g2 and g1.hash == g2.hash
    assert genesis("other-net").hash != g1.hash
    h = g1.header
    assert (h.height, h.prev, h.time, h.miner) == (0, bytes(32), 0.0, bytes(32))
    assert g1.sig == bytes(64) and g1.txs == ()
    # and it survives the wire
    assert Block.from_wire(roundtrip(g1.to_wire()), 0).hash == g1.hash
