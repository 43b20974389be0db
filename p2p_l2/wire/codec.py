"""Message bodies: msgpack `[kind, payload]`, validated per kind before anyone uses them.

Design: one registry maps each kind to a validator; layers register their kinds at import
time, usually with `fields(...)`, which compiles a field spec into a flat closure (exact
type checks, no per-message reflection).  `decode` turns *every* failure - bad msgpack,
wrong shape, unknown kind, bad payload, even a buggy validator - into RemoteProtocolError,
so the connection loop needs exactly one `except`.
"""

from __future__ import annotations

from typing import Any, Callable

import msgpack

from p2p_l2.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "Bytes",
    "Optional",
    "decode",
    "encode",
    "fields",
    "register",
    "registered",
]

Validator = Callable[[Any], Any]

_VALIDATORS: dict[str, Validator] = {}
_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_unpackb = msgpack.unpackb


# ---------------------------------------------------------------- registry


def register(kind: str, validator: Validator) -> None:
    """Register the validator for `kind`; it returns the payload or raises bad_payload."""
    if type(kind) is not str or not kind:
        raise LocalProtocolError(f"message kind must be a non-empty str, got {kind!r}")
    if kind in _VALIDATORS:
        raise LocalProtocolError(f"message kind {kind!r} is already registered")
    if not callable(validator):
        raise LocalProtocolError(f"validator for {kind!r} is not callable")
    _VALIDATORS[kind] = validator


def registered() -> dict[str, Validator]:
    """A copy of the registry (kind -> validator), for tests and documentation."""
    return dict(_VALIDATORS)


# ---------------------------------------------------------------- encode / decode


def encode(kind: str, payload: Any) -> bytes:
    """Pack a message body.  The payload is not validated (we trust our own code),
    but the kind must be registered so a typo fails here, not at the peer."""
    if kind not in _VALIDATORS:
        raise LocalProtocolError(f"encode: unknown message kind {kind!r}")
    try:
        return _packb([kind, payload])
    except Exception as exc:
        raise LocalProtocolError(f"encode {kind!r}: cannot pack payload: {exc}") from exc


def decode(body: bytes) -> tuple[str, Any]:
    """Unpack and validate one body; raises only RemoteProtocolError
    (`malformed`, `unknown_kind`, `bad_payload`, or a reason a validator chose)."""
    try:
        msg = _unpackb(body, raw=False)  # max_*_len default to len(body)
    except Exception as exc:
        raise RemoteProtocolError("malformed", f"not msgpack: {type(exc).__name__}") from None
    if type(msg) is not list or len(msg) != 2:
        raise RemoteProtocolError("malformed", "body is not a [kind, payload] array")
    kind, payload = msg
    if type(kind) is not str:
        raise RemoteProtocolError("malformed", "kind is not a string")
    validator = _VALIDATORS.get(kind)
    if validator is None:
        raise RemoteProtocolError("unknown_kind", repr(kind[:64]))
    try:
        return kind, validator(payload)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(exc.reason, f"{kind}: {exc.detail}") from None
    except Exception as exc:  # a validator bug must not crash the connection loop
        raise RemoteProtocolError("bad_payload", f"{kind}: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------- field specs


class Optional:
    """Field spec: the key may be missing or None (a missing key is set to None)."""

    __slots__ = ("spec",)

    def __init__(self, spec: Any):
        self.spec = spec

    def __repr__(self) -> str:
        return f"Optional({_name(self.spec)})"


class Bytes:
    """Field spec: bytes of exactly `n` bytes (keys, hashes, signatures)."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n

    def __repr__(self) -> str:
        return f"Bytes({self.n})"


def _name(spec: Any) -> str:
    if isinstance(spec, type):
        return spec.__name__
    if isinstance(spec, list):
        return f"[{_name(spec[0])}]"
    return getattr(spec, "__name__", None) or repr(spec)


def _got(v: Any) -> str:
    return type(v).__name__


def _bad(where: str, spec: Any, v: Any) -> RemoteProtocolError:
    return RemoteProtocolError("bad_payload", f"{where}: expected {_name(spec)}, got {_got(v)}")


_Check = Callable[[Any, str], Any]


def _compile(spec: Any) -> _Check:
    """Compile one field spec into `check(value, where) -> normalised value`."""
    if spec is object:
        return lambda v, w: v
    if spec is float:

        def check_float(v: Any, w: str) -> Any:
            t = type(v)
            if t is float:
                return v
            if t is int:
                return float(v)
            raise _bad(w, float, v)

        return check_float
    if isinstance(spec, type):

        def check_type(v: Any, w: str, t: type = spec) -> Any:
            if type(v) is not t:
                raise _bad(w, t, v)
            return v

        return check_type
    if isinstance(spec, Bytes):
        n = spec.n

        def check_bytes(v: Any, w: str) -> Any:
            if type(v) is not bytes or len(v) != n:
                raise RemoteProtocolError(
                    "bad_payload",
                    f"{w}: expected {n} bytes, got "
                    + (f"{len(v)} bytes" if type(v) is bytes else _got(v)),
                )
            return v

        return check_bytes
    if isinstance(spec, Optional):
        inner = _compile(spec.spec)
        return lambda v, w: None if v is None else inner(v, w)
    if isinstance(spec, list):
        if len(spec) != 1:
            raise LocalProtocolError(f"list spec must have one element type, got {spec!r}")
        elem = spec[0]
        if isinstance(elem, type) and elem not in (float, object):

            def check_list_plain(v: Any, w: str, t: type = elem) -> Any:
                if type(v) is not list:
                    raise _bad(w, spec, v)
                for i, x in enumerate(v):
                    if type(x) is not t:
                        raise _bad(f"{w}[{i}]", t, x)
                return v

            return check_list_plain
        if isinstance(elem, Bytes):
            n = elem.n

            def check_list_bytes(v: Any, w: str) -> Any:
                if type(v) is not list:
                    raise _bad(w, spec, v)
                for i, x in enumerate(v):
                    if type(x) is not bytes or len(x) != n:
                        raise _bad(f"{w}[{i}]", elem, x)
                return v

            return check_list_bytes
        inner = _compile(elem)

        def check_list(v: Any, w: str) -> Any:
            if type(v) is not list:
                raise _bad(w, spec, v)
            ew = w + "[]"  # the index is spliced in only on failure
            out = []
            i = 0
            try:
                for i, x in enumerate(v):
                    out.append(inner(x, ew))
            except RemoteProtocolError as exc:
                detail = exc.detail
                if detail.startswith(ew):
                    detail = f"{w}[{i}]{detail[len(ew):]}"
                raise RemoteProtocolError(exc.reason, detail) from None
            return out

        return check_list
    if callable(spec):  # a nested validator, e.g. another fields(...)

        def check_nested(v: Any, w: str) -> Any:
            try:
                return spec(v)
            except RemoteProtocolError as exc:
                raise RemoteProtocolError(exc.reason, f"{w}: {exc.detail}") from None

        return check_nested
    raise LocalProtocolError(f"bad field spec {spec!r}")


def fields(**spec: Any) -> Validator:
    """Build a validator for a map payload with exactly these keys.

    Spec values: a type (exact: bool is not int, str is not bytes), `float` (int accepted
    and converted), `object` (anything), `Bytes(n)`, `[T]` (list of T), `Optional(T)`
    (missing or None; missing keys are filled with None), or a nested validator.
    Unknown keys are rejected.  The payload dict is normalised in place and returned.
    """
    plain: list[tuple[str, type]] = []  # hot path: exact type, required
    fixed: list[tuple[str, int]] = []  # hot path: Bytes(n), required
    other: list[tuple[str, _Check, bool]] = []
    for key, s in spec.items():
        if isinstance(s, type) and s not in (float, object):
            plain.append((key, s))
        elif isinstance(s, Bytes):
            fixed.append((key, s.n))
        elif isinstance(s, Optional):
            other.append((key, _compile(s.spec), True))
        else:
            other.append((key, _compile(s), False))
    plain_t, fixed_t, other_t = tuple(plain), tuple(fixed), tuple(other)
    n_required = len(plain_t) + len(fixed_t)

    def validate(p: Any) -> Any:
        if type(p) is not dict:
            raise RemoteProtocolError("bad_payload", f"expected a map, got {_got(p)}")
        n_in = len(p)
        get = p.get
        for key, t in plain_t:
            if type(get(key)) is not t:
                raise _field_error(p, key, t)
        for key, n in fixed_t:
            v = get(key)
            if type(v) is not bytes or len(v) != n:
                raise _field_error(p, key, Bytes(n))
        present = n_required
        for key, check, optional in other_t:
            if key in p:
                present += 1
                v = p[key]
                if v is None and optional:
                    continue
                nv = check(v, key)
                if nv is not v:
                    p[key] = nv
            elif optional:
                p[key] = None
            else:
                raise RemoteProtocolError("bad_payload", f"missing field {key!r}")
        if n_in != present:
            extra = sorted(repr(k) for k in p if k not in spec)
            raise RemoteProtocolError("bad_payload", f"unknown field(s) {', '.join(extra)[:200]}")
        return p

    validate.spec = dict(spec)  # type: ignore[attr-defined]
    validate.__name__ = "fields(" + ", ".join(f"{k}={_name(v)}" for k, v in spec.items()) + ")"
    return validate


def _field_error(p: dict, key: str, spec: Any) -> RemoteProtocolError:
    if key not in p:
        return RemoteProtocolError("bad_payload", f"missing field {key!r}")
    v = p[key]
    if isinstance(spec, Bytes) and type(v) is bytes:
        return RemoteProtocolError("bad_payload", f"{key}: expected {spec.n} bytes, got {len(v)}")
    return _bad(key, spec, v)


# ---------------------------------------------------------------- built-in kinds

register("hello", fields(net=str, ver=int, pk=Bytes(32), eph=Bytes(32)))
register("auth", fields(sig=Bytes(64)))
register("ping", fields(n=int))
register("pong", fields(n=int))
register("bye", fields(reason=str))
