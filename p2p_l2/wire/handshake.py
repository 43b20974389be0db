"""Sans-IO authenticated key exchange (DESIGN §3) and the sealed session it yields.

Design: both sides send `hello` (network, version, ed25519 identity key, fresh X25519
ephemeral) at once; on the peer's hello each sends `auth`, an ed25519 signature over
b"p2p_l2/handshake/v1" + blake2b-256(initiator_hello_body + responder_hello_body).  The
transcript holds *our* fresh ephemeral, so a replayed hello+auth never verifies; the
ReplayCache additionally refuses an ephemeral seen before.  Session keys come from
crypto_kx over the ephemerals; frames are XSalsa20-Poly1305 with an implicit per-direction
64-bit counter nonce, so a dropped, replayed or reordered frame fails to open.

Transitions (one table, `_TRANSITIONS`):  idle --start--> sent_hello --hello--> sent_auth
--auth--> complete.  Any other received kind is `unexpected_message`; any remote error
moves to `failed`.  Calling `receive` in idle/complete/failed is a LocalProtocolError.
"""

from __future__ import annotations

from collections import OrderedDict
from hashlib import blake2b
from typing import Callable

from nacl.bindings import (
    crypto_kx_client_session_keys,
    crypto_kx_keypair,
    crypto_kx_server_session_keys,
    crypto_secretbox,
    crypto_secretbox_open,
)

from p2p_l2.errors import LocalProtocolError, RemoteProtocolError
from p2p_l2.wire.codec import decode, encode
from p2p_l2.wire.identity import Identity, verify

__all__ = ["Handshake", "ReplayCache", "Session", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
_AUTH_DOMAIN = b"p2p_l2/handshake/v1"

IDLE = "idle"
SENT_HELLO = "sent_hello"
SENT_AUTH = "sent_auth"
COMPLETE = "complete"
FAILED = "failed"

# (state, event) -> next state; events are "start" (local) or a received message kind.
_TRANSITIONS: dict[tuple[str, str], str] = {
    (IDLE, "start"): SENT_HELLO,
    (SENT_HELLO, "hello"): SENT_AUTH,
    (SENT_AUTH, "auth"): COMPLETE,
}


class ReplayCache:
    """A bounded LRU set of peer ephemeral keys, shared by all handshakes of one node.

    Only ephemerals of *authenticated* hellos are added (on a valid auth), so an attacker
    cannot flush the cache with junk hellos, nor poison it by racing a victim's hello.
    """

    __slots__ = ("maxlen", "_keys")

    def __init__(self, maxlen: int = 4096):
        if maxlen < 1:
            raise ValueError("ReplayCache maxlen must be >= 1")
        self.maxlen = maxlen
        self._keys: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, key: bytes) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: bytes) -> None:
        keys = self._keys
        keys[key] = None
        keys.move_to_end(key)
        if len(keys) > self.maxlen:
            keys.popitem(last=False)


class Handshake:
    """One side of the handshake.  Feed it received bodies; send what it returns."""

    def __init__(
        self,
        identity: Identity,
        network: str,
        initiator: bool,
        expect: bytes | None = None,
        is_known: Callable[[bytes], bool] | None = None,
        replay_cache: ReplayCache | None = None,
        version: int = PROTOCOL_VERSION,
    ):
        self.identity = identity
        self.network = network
        self.initiator = initiator
        self.expect = expect
        self.is_known = is_known
        self.replay_cache = replay_cache
        self.version = version
        self.state = IDLE
        self.peer_pubkey: bytes | None = None  # set only once the peer is authenticated
        self._eph_pk, self._eph_sk = crypto_kx_keypair()
        self._hello_body = b""
        self._claimed_pk = b""
        self._peer_eph = b""
        self._auth_msg = b""
        self._keys: tuple[bytes, bytes] | None = None  # (tx, rx)
        self._session: Session | None = None

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    @property
    def claimed_pubkey(self) -> bytes | None:
        """The key in the peer's hello, *not yet authenticated* unless `complete`:
        fit for logging a refusal, never for banning or scoring."""
        return self._claimed_pk or None

    def _transition(self, event: str) -> str:
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise RemoteProtocolError("unexpected_message", f"{event!r} in state {self.state}")
        return nxt

    def start(self) -> list[bytes]:
        """Our hello, to send at once."""
        if self.state != IDLE:
            raise LocalProtocolError(f"start() in state {self.state}")
        hello = {"net": self.network, "ver": self.version, "pk": self.identity.pubkey,
                 "eph": self._eph_pk}
        self._hello_body = encode("hello", hello)
        self.state = _TRANSITIONS[(IDLE, "start")]
        return [self._hello_body]

    def receive(self, body: bytes) -> list[bytes]:
        """Process one received frame body; return the bodies to send (maybe none)."""
        if self.state in (IDLE, COMPLETE, FAILED):
            raise LocalProtocolError(f"receive() in state {self.state}")
        try:
            kind, payload = decode(body)
            nxt = self._transition(kind)
            out = self._on_hello(body, payload) if kind == "hello" else self._on_auth(payload)
        except RemoteProtocolError:
            self.state = FAILED
            raise
        self.state = nxt
        return out

    def _on_hello(self, body: bytes, p: dict) -> list[bytes]:
        if p["net"] != self.network:
            raise RemoteProtocolError(
                "wrong_network", f"peer is on {p['net'][:64]!r}, we are on {self.network!r}")
        if p["ver"] != self.version:
            raise RemoteProtocolError(
                "bad_version", f"peer speaks v{p['ver']}, we speak v{self.version}")
        pk, eph = p["pk"], p["eph"]
        self._claimed_pk = pk
        if pk == self.identity.pubkey:
            raise RemoteProtocolError("self_connection", "peer has our own public key")
        if self.expect is not None and pk != self.expect:
            raise RemoteProtocolError(
                "unexpected_peer", f"expected {self.expect.hex()[:16]}, got {pk.hex()[:16]}")
        if self.is_known is not None and not self.is_known(pk):
            raise RemoteProtocolError("unknown_peer", pk.hex()[:16])
        if self.replay_cache is not None and eph in self.replay_cache:
            raise RemoteProtocolError("replayed_hello", f"ephemeral {eph.hex()[:16]} seen before")
        try:
            if self.initiator:
                rx, tx = crypto_kx_client_session_keys(self._eph_pk, self._eph_sk, eph)
            else:
                rx, tx = crypto_kx_server_session_keys(self._eph_pk, self._eph_sk, eph)
        except Exception:
            raise RemoteProtocolError(
                "bad_payload", "hello: eph is not a usable X25519 key") from None
        self._keys = (tx, rx)
        self._peer_eph = eph
        if self.initiator:
            transcript = self._hello_body + body
        else:
            transcript = body + self._hello_body
        self._auth_msg = _AUTH_DOMAIN + blake2b(transcript, digest_size=32).digest()
        return [encode("auth", {"sig": self.identity.sign(self._auth_msg)})]

    def _on_auth(self, p: dict) -> list[bytes]:
        if not verify(self._claimed_pk, self._auth_msg, p["sig"]):
            raise RemoteProtocolError("bad_signature", "auth does not verify against hello's pk")
        if self.replay_cache is not None:
            self.replay_cache.add(self._peer_eph)
        self.peer_pubkey = self._claimed_pk
        self._eph_sk = b""  # no longer needed
        return []

    def session(self) -> Session:
        """The sealed session (the same object on every call); only once complete."""
        if self.state != COMPLETE:
            raise LocalProtocolError(f"session() in state {self.state}")
        if self._session is None:
            assert self._keys is not None and self.peer_pubkey is not None
            self._session = Session(self._keys[0], self._keys[1], self.peer_pubkey)
        return self._session

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return f"<Handshake {self.identity.name!r} {role} {self.state}>"


_NONCE_LIMIT = 1 << 64


class Session:
    """XSalsa20-Poly1305 in each direction; nonce = 64-bit frame counter, little-endian,
    zero-padded to 24 bytes, never sent.  Output of `seal` is 16-byte MAC + ciphertext."""

    __slots__ = ("peer_pubkey", "_tx_key", "_rx_key", "_tx_n", "_rx_n")

    def __init__(self, tx_key: bytes, rx_key: bytes, peer_pubkey: bytes | None = None):
        self.peer_pubkey = peer_pubkey
        self._tx_key, self._rx_key = tx_key, rx_key
        self._tx_n = 0
        self._rx_n = 0

    @property
    def sent(self) -> int:
        """Frames sealed so far."""
        return self._tx_n

    @property
    def received(self) -> int:
        """Frames opened so far."""
        return self._rx_n

    def seal(self, body: bytes) -> bytes:
        n = self._tx_n
        if n >= _NONCE_LIMIT:
            raise LocalProtocolError("session nonce space exhausted; reconnect")
        self._tx_n = n + 1
        return crypto_secretbox(body, n.to_bytes(24, "little"), self._tx_key)

    def open(self, data: bytes) -> bytes:
        """Decrypt the next frame; raises RemoteProtocolError("decrypt_failed") on any
        failure, after which every later `open` fails too (the stream is out of step)."""
        n = self._rx_n
        try:
            body = crypto_secretbox_open(data, n.to_bytes(24, "little"), self._rx_key)
        except Exception:
            self._rx_key = b""  # poison: a wrong-length key makes every later open fail
            raise RemoteProtocolError("decrypt_failed", f"frame #{n} does not open") from None
        self._rx_n = n + 1
        return body


def session_pair(a: Identity, b: Identity, network: str) -> tuple[Session, Session]:
    """Run a whole handshake between `a` (initiator) and `b` in memory; for tests and benches."""
    ha, hb = Handshake(a, network, True), Handshake(b, network, False)
    to_b, to_a = ha.start(), hb.start()
    while to_a or to_b:
        if to_b:
            to_a += hb.receive(to_b.pop(0))
        if to_a:
            to_b += ha.receive(to_a.pop(0))
    return ha.session(), hb.session()
