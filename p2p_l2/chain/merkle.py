"""Merkle trees of 32-byte hashes (block txids, later plasma transactions).

Design: blake2b-32 pairs with Bitcoin's odd-node duplication, domain-separated: leaf =
H(0|x), pair = H(1|l|r), duplicated odd node = H(2|x|x).  Tags 0/1 stop a node posing as a
leaf; tag 2 removes CVE-2012-2459 ([a,b,c] and [a,b,c,c] no longer share a root).  A proof
lists siblings bottom-up, b"" marking a duplication step.
"""

from __future__ import annotations

from hashlib import blake2b

__all__ = ["EMPTY_ROOT", "merkle_proof", "merkle_root", "verify_proof"]

EMPTY_ROOT = bytes(32)
_LEAF, _PAIR, _DUP = b"\x00", b"\x01", b"\x02"


def _leaf(x: bytes) -> bytes:
    return blake2b(_LEAF + x, digest_size=32).digest()


def _level_up(level: list[bytes]) -> list[bytes]:
    out = []
    n = len(level)
    for i in range(0, n - 1, 2):
        out.append(blake2b(_PAIR + level[i] + level[i + 1], digest_size=32).digest())
    if n & 1:
        last = level[-1]
        out.append(blake2b(_DUP + last + last, digest_size=32).digest())
    return out


def merkle_root(leaves: list[bytes]) -> bytes:
    """The root of `leaves` (in order); 32 zero bytes for an empty list."""
    if not leaves:
        return EMPTY_ROOT
    level = [_leaf(x) for x in leaves]
    while len(level) > 1:
        level = _level_up(level)
    return level[0]


def merkle_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf `index` up to the root (b"" marks a duplicated odd node)."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} out of range for {len(leaves)} leaves")
    level = [_leaf(x) for x in leaves]
    proof: list[bytes] = []
    while len(level) > 1:
        sib = index ^ 1
        proof.append(level[sib] if sib < len(level) else b"")
        level = _level_up(level)
        index >>= 1
    return proof


def verify_proof(leaf: bytes, index: int, proof: list[bytes], root: bytes) -> bool:
    """True iff `proof` shows `leaf` at position `index` under `root`; never raises."""
    try:
        if type(leaf) is not bytes or type(index) is not int or index < 0 or index >> len(proof):
            return False
        cur = _leaf(leaf)
        for sib in proof:
            if sib == b"":
                if index & 1:  # only the last node of an odd level (even index) is duplicated
                    return False
                cur = blake2b(_DUP + cur + cur, digest_size=32).digest()
            elif type(sib) is not bytes or len(sib) != 32:
                return False
            elif index & 1:
                cur = blake2b(_PAIR + sib + cur, digest_size=32).digest()
            else:
                cur = blake2b(_PAIR + cur + sib, digest_size=32).digest()
            index >>= 1
        return cur == root
    except Exception:
        return False
