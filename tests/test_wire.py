"""Tests for p2p_l2.wire: framing, codec, identity, handshake and session (all sync)."""

from __future__ import annotations

import random
from collections import deque
from hashlib import blake2b
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_sign_seed_keypair

from p2p_l2.errors import LocalProtocolError, RemoteProtocolError
from p2p_l2.wire import (
    MAX_FRAME_SIZE,
    Bytes,
    FrameDecoder,
    Handshake,
    Identity,
    Optional,
    ReplayCache,
    Session,
    decode,
    encode,
    encode_frame,
    fields,
    register,
    registered,
    verify,
)

NET = "testnet"
ALICE = Identity.derive(7, "alice")
BOB = Identity.derive(7, "bob")
MALLORY = Identity.derive(7, "mallory")


# ======================================================================== helpers


class HandshakePair:
    """Two Handshakes joined by an in-memory, ordered link (cf. h11's ConnectionPair).

    `a` is the initiator, `b` the responder.  `sent[side]` records every body each side
    sent, so tests can replay or tamper with them.  `order` chooses which direction
    delivers next: "a" (a's queue first), "b", or a random.Random for a random schedule.
    """

    def __init__(self, a: Identity = ALICE, b: Identity = BOB, *, a_kw: dict | None = None,
                 b_kw: dict | None = None):
        a_kw, b_kw = dict(a_kw or {}), dict(b_kw or {})  # never mutate shared params
        self.a = Handshake(a, a_kw.pop("network", NET), True, **a_kw)
        self.b = Handshake(b, b_kw.pop("network", NET), False, **b_kw)
        self.sent: dict[str, list[bytes]] = {"a": [], "b": []}

    def run(self, order: Any = "a", tamper=None) -> None:
        """Run to completion; RemoteProtocolErrors propagate.  `tamper(side, body)` may
        rewrite each body in transit."""
        to = {"b": deque(), "a": deque()}  # queues of bodies destined to that side
        for side, hs in (("a", self.a), ("b", self.b)):
            dest = "b" if side == "a" else "a"
            for body in hs.start():
                self.sent[side].append(body)
                to[dest].append(tamper(side, body) if tamper else body)
        while to["a"] or to["b"]:
            if isinstance(order, random.Random):
                dest = order.choice([d for d in ("a", "b") if to[d]])
            else:
                dest = order if to[order] else ("b" if order == "a" else "a")
            src = "b" if dest == "a" else "a"
            hs = self.a if dest == "a" else self.b
            for body in hs.receive(to[dest].popleft()):
                self.sent[dest].append(body)
                to[src].append(tamper(dest, body) if tamper else body)

    def sessions(self) -> tuple[Session, Session]:
        return self.a.session(), self.b.session()


def reason_of(fn, *args) -> str:
    with pytest.raises(RemoteProtocolError) as exc:
        fn(*args)
    return exc.value.reason


# ======================================================================== framing


@settings(max_examples=200)
@given(
    bodies=st.lists(st.binary(max_size=300), max_size=30),
    data=st.data(),
)
def test_frames_survive_any_rechunking(bodies, data):
    stream = b"".join(encode_frame(b) for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    dec = FrameDecoder()
    out = []
    prev = 0
    for cut in cuts + [len(stream)]:
        dec.feed(stream[prev:cut])
        prev = cut
        while (frame := dec.next_frame()) is not None:
            out.append(frame)
    assert out == bodies
    assert dec.buffered == 0


def test_frames_byte_by_byte():
    bodies = [b"", b"a", b"hello" * 100, bytes(range(256))]
    stream = b"".join(map(encode_frame, bodies))
    dec = FrameDecoder()
    out = []
    for i in range(len(stream)):
        dec.feed(stream[i : i + 1])
        while (f := dec.next_frame()) is not None:
            out.append(f)
    assert out == bodies


def test_many_small_frames_in_one_chunk():
    bodies = [i.to_bytes(3, "big") for i in range(200_000)]
    dec = FrameDecoder()
    dec.feed(b"".join(map(encode_frame, bodies)))
    dec.feed(encode_frame(b"tail")[:5])  # partial frame stays buffered across compaction
    out = []
    while (f := dec.next_frame()) is not None:
        out.append(f)
    assert out == bodies
    assert dec.buffered == 5
    dec.feed(encode_frame(b"tail")[5:])
    assert dec.next_frame() == b"tail"


def test_oversize_prefix_raises_before_body():
    dec = FrameDecoder(max_size=100)
    dec.feed(encode_frame(b"x" * 100))
    assert dec.next_frame() == b"x" * 100
    dec.feed((101).to_bytes(4, "big"))  # only the prefix: no body sent yet
    assert reason_of(dec.next_frame) == "frame_too_large"
    assert reason_of(dec.next_frame) == "frame_too_large"  # stays broken


def test_default_max_and_huge_prefix():
    dec = FrameDecoder()
    assert dec.max_size == MAX_FRAME_SIZE == 36 * 1024 * 1024
    dec.feed(b"\xff\xff\xff\xff")
    assert reason_of(dec.next_frame) == "frame_too_large"


def test_partial_prefix_needs_more_data():
    dec = FrameDecoder()
    dec.feed(b"\x00\x00")
    assert dec.next_frame() is None
    dec.feed(b"\x00\x02a")
    assert dec.next_frame() is None
    dec.feed(b"b")
    assert dec.next_frame() == b"ab"
    assert dec.next_frame() is None


def test_encode_frame_leaves_the_limit_to_the_receiver():
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    big = encode_frame(bytes(MAX_FRAME_SIZE + 1))  # e.g. a control API response
    dec = FrameDecoder()
    dec.feed(big[:4])
    assert reason_of(dec.next_frame) == "frame_too_large"
    roomy = FrameDecoder(max_size=2 * MAX_FRAME_SIZE)
    roomy.feed(big)
    assert roomy.next_frame() == bytes(MAX_FRAME_SIZE + 1)


# ======================================================================== codec


def test_builtin_kinds_roundtrip():
    samples = {
        "hello": {"net": NET, "ver": 1, "pk": bytes(32), "eph": bytes(range(32))},
        "auth": {"sig": bytes(64)},
        "ping": {"n": 5},
        "pong": {"n": -(2**63)},
        "bye": {"reason": "shutting down"},
    }
    for kind, payload in samples.items():
        assert decode(encode(kind, payload)) == (kind, payload)


def test_register_twice_and_bad_registrations():
    with pytest.raises(LocalProtocolError):
        register("ping", fields(n=int))
    with pytest.raises(LocalProtocolError):
        register("", fields(n=int))
    with pytest.raises(LocalProtocolError):
        register(b"x", fields(n=int))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        fields(x=[int, str])
    with pytest.raises(LocalProtocolError):
        fields(x=5)


def test_encode_refuses_unknown_kind_and_unpackable_payload():
    with pytest.raises(LocalProtocolError):
        encode("no-such-kind", {})
    with pytest.raises(LocalProtocolError):
        encode("ping", {"n": object()})
    with pytest.raises(LocalProtocolError):
        encode("ping", {"n": 2**70})
    assert decode(encode("ping", {"n": 1})) == ("ping", {"n": 1})  # packer not left dirty


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"", "malformed"),
        (b"\xc1", "malformed"),  # never-used msgpack byte
        (msgpack.packb(["ping", {"n": 1}]) + b"\x00", "malformed"),  # trailing data
        (msgpack.packb(["ping", {"n": 1}])[:-1], "malformed"),  # truncated
        (msgpack.packb({"ping": 1}), "malformed"),
        (msgpack.packb(["ping"]), "malformed"),
        (msgpack.packb(["ping", {"n": 1}, 3]), "malformed"),
        (msgpack.packb([1, {"n": 1}]), "malformed"),
        (msgpack.packb([b"ping", {"n": 1}], use_bin_type=True), "malformed"),
        (msgpack.packb(["nope", {}]), "unknown_kind"),
        (msgpack.packb(["ping", {"n": True}]), "bad_payload"),
        (msgpack.packb(["ping", [1]]), "bad_payload"),
        (msgpack.packb(["ping", {"n": 1, "x": 2}]), "bad_payload"),
        (msgpack.packb(["ping", {}]), "bad_payload"),
        (b"\x92\xa4ping\xdf\xff\xff\xff\xff", "malformed"),  # map claiming 4G entries
        (b"\x92\xa4ping\xc6\xff\xff\xff\xff", "malformed"),  # bin claiming 4 GB
        (b"\x91" * 5000 + b"\xc0", "malformed"),  # nested too deep
        (msgpack.packb(["ping", msgpack.ExtType(5, b"xx")]), "bad_payload"),
        (b"\x92\xa4ping\xd6\xff\x00", "malformed"),  # bad timestamp ext
        (b"\x92\xa2\xff\xfe\x80", "malformed"),  # kind not utf-8
    ],
)
def test_decode_rejections(body, reason):
    assert reason_of(decode, body) == reason


def test_decode_map_with_unhashable_or_odd_keys():
    body = b"\x92\xa4ping\x81\x91\x01\x01"  # {[1]: 1}
    assert reason_of(decode, body) == "malformed"
    body = msgpack.packb(["ping", {1: 1}])
    assert reason_of(decode, body) == "malformed"


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_decode_random_bytes_only_raises_remote_errors(body):
    try:
        decode(body)
    except RemoteProtocolError:
        pass


_VALID_BODIES = [
    encode("hello", {"net": NET, "ver": 1, "pk": bytes(32), "eph": bytes(32)}),
    encode("auth", {"sig": b"s" * 64}),
    encode("ping", {"n": 2**40}),
    encode("bye", {"reason": "x"}),
]


@st.composite
def mutated_bodies(draw):
    body = bytearray(draw(st.sampled_from(_VALID_BODIES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(body) - 1, 0)))
        if op == "flip" and body:
            body[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and body:
            body[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            body[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and body:
            del body[pos]
        elif op == "truncate":
            del body[pos:]
    return bytes(body)


@settings(max_examples=1000)
@given(mutated_bodies())
def test_decode_mutated_bodies_only_raises_remote_errors(body):
    try:
        kind, payload = decode(body)
    except RemoteProtocolError:
        return
    assert registered()[kind](payload) == payload  # what decodes is valid


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=70),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.binary(max_size=5), children, max_size=5),
    max_leaves=12,
)


@settings(max_examples=500)
@given(st.sampled_from(sorted(registered())), msgpack_values)
def test_decode_structured_junk_only_raises_remote_errors(kind, payload):
    body = msgpack.packb([kind, payload], use_bin_type=True)
    try:
        decode(body)
    except RemoteProtocolError as exc:
        assert exc.reason in ("bad_payload", "malformed")


def _sample(spec: Any) -> Any:
    """A valid value for a field spec."""
    if isinstance(spec, Bytes):
        return bytes(spec.n)
    if isinstance(spec, Optional):
        return _sample(spec.spec)
    if isinstance(spec, list):
        return [_sample(spec[0])]
    if hasattr(spec, "spec"):
        return {k: _sample(v) for k, v in spec.spec.items()}
    return {str: "s", bytes: b"b", int: 1, float: 1.5, bool: True, object: 1, list: [],
            dict: {}}[spec]


_CANDIDATES = [True, False, 1, 1.5, "s", b"b", None, [], {}, [1], {"x": 1}]


def _wrong(spec: Any) -> list[Any]:
    """Values a field with this spec must refuse."""
    if spec is object:
        return []
    if spec is float:
        return [c for c in _CANDIDATES if type(c) not in (float, int)]
    if isinstance(spec, type):
        return [c for c in _CANDIDATES if type(c) is not spec]
    if isinstance(spec, Bytes):
        return [c for c in _CANDIDATES if type(c) is not bytes] + [bytes(spec.n + 1)] + (
            [bytes(spec.n - 1)] if spec.n else [])
    if isinstance(spec, Optional):
        return [c for c in _wrong(spec.spec) if c is not None]
    if isinstance(spec, list):
        return [c for c in _CANDIDATES if type(c) is not list] + [[w] for w in _wrong(spec[0])]
    if hasattr(spec, "spec"):
        return [c for c in _CANDIDATES if type(c) is not dict]
    raise AssertionError(spec)


register(
    "test.wire.rich",
    fields(
        topic=str, data=bytes, hops=int, ts=float, ok=bool, ids=[bytes], h=Bytes(4),
        origin=Optional(bytes), pts=[float], inner=fields(a=int), opt_list=Optional([int]),
        any=object,
    ),
)


def test_every_registered_validator_rejects_wrong_types():
    checked = 0
    for kind, validator in registered().items():
        spec = getattr(validator, "spec", None)
        if spec is None:
            continue
        valid = {k: _sample(v) for k, v in spec.items()}
        assert decode(encode(kind, dict(valid)))[0] == kind
        for key, field_spec in spec.items():
            for bad in _wrong(field_spec):
                payload = dict(valid, **{key: bad})
                assert reason_of(decode, encode(kind, payload)) == "bad_payload", (kind, key, bad)
                checked += 1
            if not isinstance(field_spec, Optional):
                payload = {k: v for k, v in valid.items() if k != key}
                assert reason_of(decode, encode(kind, payload)) == "bad_payload", (kind, key)
        assert reason_of(decode, encode(kind, dict(valid, zz_extra=1))) == "bad_payload"
        assert reason_of(decode, encode(kind, [valid])) == "bad_payload"
    assert checked > 100


def test_fields_normalise_and_optional():
    v = registered()["test.wire.rich"]
    p = {"topic": "t", "data": b"", "hops": 0, "ts": 3, "ok": False, "ids": [], "h": b"abcd",
         "pts": [1, 2.5], "inner": {"a": 1}, "any": [None]}
    kind, out = decode(encode("test.wire.rich", p))
    assert type(out["ts"]) is float and out["ts"] == 3.0
    assert out["pts"] == [1.0, 2.5] and all(type(x) is float for x in out["pts"])
    assert out["origin"] is None and out["opt_list"] is None
    p.update(origin=None, opt_list=[1, 2])
    assert decode(encode("test.wire.rich", p))[1]["opt_list"] == [1, 2]
    with pytest.raises(RemoteProtocolError) as exc:
        v(dict(p, inner={"a": "x"}))
    assert "inner" in exc.value.detail
    with pytest.raises(RemoteProtocolError) as exc:
        v(dict(p, ids=[b"a", 2]))
    assert "ids[1]" in exc.value.detail


register("test.wire.lists", fields(hs=[Bytes(4)], subs=[fields(a=int)], fs=[float]))


def test_list_specs_report_the_failing_index():
    ok = {"hs": [b"abcd", b"efgh"], "subs": [{"a": 1}, {"a": 2}], "fs": [1, 2.0]}
    assert decode(encode("test.wire.lists", ok))[1] == {
        "hs": [b"abcd", b"efgh"], "subs": [{"a": 1}, {"a": 2}], "fs": [1.0, 2.0]}
    for bad, where in [
        ({"hs": [b"abcd", b"abc"]}, "hs[1]"),
        ({"subs": [{"a": 1}, {"a": 1}, {"a": True}]}, "subs[2]: a"),
        ({"subs": [{"a": 1, "b": 2}]}, "subs[0]: unknown field"),
        ({"fs": [1.5, "x"]}, "fs[1]"),
        ({"fs": 1.5}, "fs: expected [float]"),
    ]:
        with pytest.raises(RemoteProtocolError) as exc:
            decode(encode("test.wire.lists", dict(ok, **bad)))
        assert exc.value.reason == "bad_payload"
        assert exc.value.detail.startswith("test.wire.lists: " + where), exc.value.detail


def _buggy_validator(p):
    return p["missing"]  # KeyError: a bug, not a peer's fault


register("test.wire.buggy", _buggy_validator)


def test_validator_bugs_become_bad_payload():
    assert reason_of(decode, encode("test.wire.buggy", {})) == "bad_payload"


# ======================================================================== identity


def test_identity_derivation_is_reproducible_and_as_documented():
    a = Identity.derive(7, "alice")
    assert a.pubkey == ALICE.pubkey and a.name == "alice"
    seed = blake2b(b"p2p_l2/node-key" + (7).to_bytes(8, "big", signed=True) + b"alice",
                   digest_size=32).digest()
    assert a.pubkey == crypto_sign_seed_keypair(seed)[0]
    assert a.pubkey_hex == a.pubkey.hex() and len(a.pubkey) == 32
    assert Identity.derive(8, "alice").pubkey != a.pubkey
    assert Identity.derive(7, "alicf").pubkey != a.pubkey
    assert Identity.derive(-1, "alice").pubkey != Identity.derive(2**64 - 1 - 2**63, "alice").pubkey
    with pytest.raises(ValueError):
        Identity.derive(2**63, "alice")
    assert "alice" in repr(a) and seed.hex() not in repr(a)


def test_sign_and_verify():
    sig = ALICE.sign(b"msg")
    assert len(sig) == 64 and ALICE.sign(b"msg") == sig  # ed25519 is deterministic
    assert verify(ALICE.pubkey, b"msg", sig)
    assert not verify(BOB.pubkey, b"msg", sig)
    assert not verify(ALICE.pubkey, b"msh", sig)
    assert not verify(ALICE.pubkey, b"msg", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert verify(bytearray(ALICE.pubkey), memoryview(b"msg"), bytearray(sig))


@given(st.one_of(st.binary(max_size=70), st.none(), st.integers(), st.text(max_size=5)),
       st.one_of(st.binary(max_size=10), st.none(), st.integers(0, 100)),
       st.one_of(st.binary(max_size=70), st.none(), st.integers()))
def test_verify_never_raises(pk, msg, sig):
    assert verify(pk, msg, sig) is False


# ======================================================================== handshake


@pytest.mark.parametrize("order", ["a", "b", 1, 2, 3, 4])
def test_handshake_completes_and_sessions_interoperate(order):
    pair = HandshakePair()
    pair.run(random.Random(order) if isinstance(order, int) else order)
    assert pair.a.complete and pair.b.complete
    assert pair.a.peer_pubkey == BOB.pubkey and pair.b.peer_pubkey == ALICE.pubkey
    sa, sb = pair.sessions()
    assert pair.a.session() is sa  # one session per handshake
    assert sa.peer_pubkey == BOB.pubkey and sb.peer_pubkey == ALICE.pubkey
    rng = random.Random(99)
    for i in range(2000):
        body = rng.randbytes(rng.choice([0, 1, 17, 300]))
        if rng.random() < 0.5:
            assert sb.open(sa.seal(body)) == body
        else:
            assert sa.open(sb.seal(body)) == body
    assert sa.sent == sb.received and sb.sent == sa.received
    assert sa.sent + sb.sent == 2000


def test_sessions_from_different_handshakes_do_not_interoperate():
    p1, p2 = HandshakePair(), HandshakePair()
    p1.run()
    p2.run()
    a1, _ = p1.sessions()
    _, b2 = p2.sessions()
    assert reason_of(b2.open, a1.seal(b"x")) == "decrypt_failed"


def test_expect_and_is_known_accept_the_right_peer():
    known = {ALICE.pubkey, BOB.pubkey}
    pair = HandshakePair(a_kw={"expect": BOB.pubkey}, b_kw={"is_known": known.__contains__})
    pair.run()
    assert pair.a.complete and pair.b.complete


@pytest.mark.parametrize(
    "a_kw, b_kw, reason",
    [
        ({"network": "mainnet"}, {}, "wrong_network"),
        ({"version": 2}, {}, "bad_version"),
        ({}, {"version": 0}, "bad_version"),
        ({"expect": MALLORY.pubkey}, {}, "unexpected_peer"),
        ({}, {"expect": MALLORY.pubkey}, "unexpected_peer"),
        ({}, {"is_known": lambda pk: pk == MALLORY.pubkey}, "unknown_peer"),
    ],
)
def test_handshake_refusals(a_kw, b_kw, reason):
    pair = HandshakePair(a_kw=a_kw, b_kw=b_kw)
    with pytest.raises(RemoteProtocolError) as exc:
        pair.run()
    assert exc.value.reason == reason
    assert "failed" in (pair.a.state, pair.b.state)
    refuser = pair.a if pair.a.state == "failed" else pair.b
    if reason != "wrong_network" and reason != "bad_version":
        assert refuser.claimed_pubkey in (ALICE.pubkey, BOB.pubkey)  # for the log line
    assert refuser.peer_pubkey is None  # never authenticated
    assert not (pair.a.complete and pair.b.complete)


def test_self_connection():
    pair = HandshakePair(ALICE, ALICE)
    with pytest.raises(RemoteProtocolError) as exc:
        pair.run()
    assert exc.value.reason == "self_connection"


def _flip_auth(who: str):
    def tamper(side: str, body: bytes) -> bytes:
        if side == who and decode(body)[0] == "auth":
            sig = bytearray(decode(body)[1]["sig"])
            sig[10] ^= 0x40
            return encode("auth", {"sig": bytes(sig)})
        return body

    return tamper


@pytest.mark.parametrize("who", ["a", "b"])
def test_tampered_auth_signature(who):
    pair = HandshakePair()
    with pytest.raises(RemoteProtocolError) as exc:
        pair.run(tamper=_flip_auth(who))
    assert exc.value.reason == "bad_signature"
    victim = pair.b if who == "a" else pair.a
    assert victim.state == "failed" and victim.peer_pubkey is None


def test_forged_auth_by_another_key():
    """Mallory relays Alice's hello but cannot sign as Alice; her own signature fails."""

    def tamper(side, body):
        if side == "a" and decode(body)[0] == "auth":
            return encode("auth", {"sig": MALLORY.sign(b"p2p_l2/handshake/v1" + bytes(32))})
        return body

    pair = HandshakePair()
    with pytest.raises(RemoteProtocolError) as exc:
        pair.run(tamper=tamper)
    assert exc.value.reason == "bad_signature"


def test_tampered_hello_in_transit_breaks_the_transcript():
    """A MITM swapping in its own ephemeral key: the signatures no longer match."""
    mitm_eph = Handshake(MALLORY, NET, True).start()[0]

    def tamper(side, body):
        kind, p = decode(body)
        if side == "a" and kind == "hello":
            return encode("hello", dict(p, eph=decode(mitm_eph)[1]["eph"]))
        return body

    pair = HandshakePair()
    with pytest.raises(RemoteProtocolError) as exc:
        pair.run(tamper=tamper)
    assert exc.value.reason == "bad_signature"


def test_replayed_hello_refused_by_shared_cache():
    cache = ReplayCache()
    pair = HandshakePair(b_kw={"replay_cache": cache})
    pair.run()
    hello_a, auth_a = pair.sent["a"]
    assert len(cache) == 1

    # Same node (same cache), fresh responder: the recorded hello is refused outright.
    again = Handshake(BOB, NET, False, replay_cache=cache)
    again.start()
    assert reason_of(again.receive, hello_a) == "replayed_hello"

    # Fresh cache: the hello passes, but the recorded auth signs a transcript holding the
    # old responder's ephemeral key, so it never verifies.
    fresh = Handshake(BOB, NET, False, replay_cache=ReplayCache())
    fresh.start()
    assert len(fresh.receive(hello_a)) == 1  # fresh replies with its auth
    assert reason_of(fresh.receive, auth_a) == "bad_signature"
    assert not fresh.complete


def test_replay_cache_only_remembers_authenticated_ephemerals():
    cache = ReplayCache()
    pair = HandshakePair(b_kw={"replay_cache": cache})
    with pytest.raises(RemoteProtocolError):
        pair.run(tamper=_flip_auth("a"))
    assert len(cache) == 0  # a forged handshake cannot poison or flush the cache
    # ... so Alice's genuine retry with a fresh ephemeral still works
    pair = HandshakePair(b_kw={"replay_cache": cache})
    pair.run()
    assert pair.b.complete and len(cache) == 1


def test_replay_cache_is_a_bounded_lru():
    cache = ReplayCache(maxlen=3)
    for k in (b"1", b"2", b"3"):
        cache.add(k)
    cache.add(b"1")  # refresh
    cache.add(b"4")  # evicts b"2"
    assert b"2" not in cache and all(k in cache for k in (b"1", b"3", b"4"))
    assert len(cache) == 3
    with pytest.raises(ValueError):
        ReplayCache(0)


def _started(initiator: bool = False, identity: Identity = BOB) -> Handshake:
    hs = Handshake(identity, NET, initiator)
    hs.start()
    return hs


def test_messages_out_of_order():
    hello_a = Handshake(ALICE, NET, True).start()[0]
    auth = encode("auth", {"sig": bytes(64)})
    # auth before hello
    assert reason_of(_started().receive, auth) == "unexpected_message"
    # anything but hello/auth
    assert reason_of(_started().receive, encode("ping", {"n": 1})) == "unexpected_message"
    # a second hello
    hs = _started()
    hs.receive(hello_a)
    assert reason_of(hs.receive, hello_a) == "unexpected_message"
    assert hs.state == "failed"
    with pytest.raises(LocalProtocolError):
        hs.receive(auth)  # failed handshakes stay failed
    # codec reasons pass through
    assert reason_of(_started().receive, b"\xc1") == "malformed"
    assert reason_of(_started().receive, msgpack.packb(["zzz", {}])) == "unknown_kind"
    assert reason_of(_started().receive, msgpack.packb(["hello", {"net": NET}])) == "bad_payload"


def test_low_order_ephemeral_key_is_refused():
    hs = _started()
    bad = encode("hello", {"net": NET, "ver": 1, "pk": ALICE.pubkey, "eph": bytes(32)})
    assert reason_of(hs.receive, bad) == "bad_payload"


def test_local_misuse():
    hs = Handshake(BOB, NET, False)
    with pytest.raises(LocalProtocolError):
        hs.receive(b"")  # before start()
    with pytest.raises(LocalProtocolError):
        hs.session()
    hs.start()
    with pytest.raises(LocalProtocolError):
        hs.start()
    with pytest.raises(LocalProtocolError):
        hs.session()
    pair = HandshakePair()
    pair.run()
    with pytest.raises(LocalProtocolError):
        pair.a.receive(pair.sent["b"][-1])  # after completion frames go to the session


# ======================================================================== session


@pytest.fixture
def sessions() -> tuple[Session, Session]:
    pair = HandshakePair()
    pair.run()
    return pair.sessions()


def test_session_tampered_ciphertext():
    for i in range(16 + len(b"hello world") + 1):  # every byte of MAC and ciphertext, + 1 extra
        a, b = _fresh_sessions()
        frame = bytearray(a.seal(b"hello world"))
        if i < len(frame):
            frame[i] ^= 0x01
        else:
            frame.append(0)
        assert reason_of(b.open, bytes(frame)) == "decrypt_failed"


def test_session_truncated_and_junk(sessions):
    sa, sb = sessions
    assert reason_of(sb.open, b"") == "decrypt_failed"
    assert reason_of(sb.open, sa.seal(b"ok")) == "decrypt_failed"  # poisoned after a failure
    sa2, sb2 = _fresh_sessions()
    assert reason_of(sb2.open, sa2.seal(b"abc")[:10]) == "decrypt_failed"
    sa3, sb3 = _fresh_sessions()
    assert reason_of(sb3.open, None) == "decrypt_failed"  # type: ignore[arg-type]


def _fresh_sessions() -> tuple[Session, Session]:
    pair = HandshakePair()
    pair.run()
    return pair.sessions()


def test_session_replayed_frame(sessions):
    sa, sb = sessions
    f = sa.seal(b"pay 1")
    assert sb.open(f) == b"pay 1"
    assert reason_of(sb.open, f) == "decrypt_failed"


def test_session_reordered_frames(sessions):
    sa, sb = sessions
    f1, f2 = sa.seal(b"one"), sa.seal(b"two")
    assert reason_of(sb.open, f2) == "decrypt_failed"
    # after a failure the stream stays broken, even for the frame that was due
    assert reason_of(sb.open, f1) == "decrypt_failed"


def test_session_dropped_frame(sessions):
    sa, sb = sessions
    sa.seal(b"lost")
    assert reason_of(sb.open, sa.seal(b"next")) == "decrypt_failed"


def test_session_reflected_frame(sessions):
    sa, sb = sessions
    assert reason_of(sa.open, sa.seal(b"echo")) == "decrypt_failed"  # own frame bounced back


def test_session_directions_are_independent(sessions):
    sa, sb = sessions
    fa, fb = sa.seal(b"same"), sb.seal(b"same")  # both use counter 0, but different keys
    assert fa != fb
    assert sb.open(fa) == b"same" and sa.open(fb) == b"same"
