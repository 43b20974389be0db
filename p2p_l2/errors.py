"""One error hierarchy for the whole package (STYLE.md habit 6)."""

from __future__ import annotations


class P2PL2Error(Exception):
    """Base of every error p2p_l2 raises on purpose."""


class ConfigError(P2PL2Error):
    """A topology config is invalid: names the file, the key path and what was expected."""

    def __init__(self, source: str, path: str, expected: str, got: object = ...):
        self.source, self.path, self.expected, self.got = source, path, expected, got
        msg = f"{source}: {path or '<root>'}: expected {expected}"
        if got is not ...:
            msg += f", got {got!r}"
        super().__init__(msg)


class ProtocolError(P2PL2Error):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something the protocol does not allow; `reason` is a short stable word."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ControlError(P2PL2Error):
    """A control call failed; `code` is stable (SPEC §4), `message` is for humans."""

    def __init__(self, code: str, message: str = ""):
        self.code, self.message = code, message or code
        super().__init__(f"{code}: {self.message}")

    def to_wire(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class WaitTimeout(P2PL2Error, TimeoutError):
    """A `wait_for` / `wait_for_event` deadline passed; the message says what was awaited."""


class NodeStartError(P2PL2Error):
    """A node process did not come up; the message carries the tail of its log."""
