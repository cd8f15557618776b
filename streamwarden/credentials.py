"""Alpaca credentials, held so that they cannot leak by accident.

The secret key is wrapped in :class:`Secret`, whose ``repr`` and ``str`` are redacted; the only
way to read it is :meth:`Secret.reveal`, which the transports call when they authenticate. The
key id is treated as sensitive too: it appears in no repr, health report or audit row. Streams
are identified by an account *fingerprint*, a keyed HMAC-SHA256 of the key id and the endpoint,
never derived from the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from streamwarden.errors import InvalidInputError

REDACTED = "<redacted>"
PAPER_ENDPOINT = "https://paper-api.alpaca.markets"
LIVE_ENDPOINT = "https://api.alpaca.markets"
FINGERPRINT_HEX_CHARS = 24
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Secret:
    """A string that refuses to be printed.

    Thread-safety: immutable.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself. Call only where the secret must leave the process (authentication)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode()).digest())

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values cannot be pickled")


def _check_token(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{name} must not be empty")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidInputError(f"{name} must be printable ASCII without whitespace")
    return value


@dataclass(frozen=True, eq=True)
class Credentials:
    """An Alpaca API key pair and the environment it belongs to.

    Raises:
        InvalidInputError: when the key id or secret is empty, not a string, or contains
            whitespace or non-printable characters. The message never contains either value.

    Thread-safety: immutable.
    """

    api_key_id: str = field(repr=False)
    secret_key: Secret = field(repr=False)
    paper: bool = True

    def __init__(self, api_key_id: str, secret_key: str | Secret, paper: bool = True) -> None:
        key_id = _check_token("api_key_id", api_key_id)
        raw_secret = secret_key.reveal() if isinstance(secret_key, Secret) else secret_key
        secret = Secret(_check_token("secret_key", raw_secret))
        if not isinstance(paper, bool):
            raise InvalidInputError(f"paper must be a bool, got {type(paper).__name__}")
        object.__setattr__(self, "api_key_id", key_id)
        object.__setattr__(self, "secret_key", secret)
        object.__setattr__(self, "paper", paper)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        """Read Alpaca's own variables: APCA_API_KEY_ID, APCA_API_SECRET_KEY, APCA_PAPER.

        ``APCA_PAPER`` defaults to paper trading; it accepts true/false, yes/no, on/off, 1/0.

        Raises:
            InvalidInputError: naming the variable that is missing or malformed (never its value).
        """
        env = os.environ if environ is None else environ
        missing = [name for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY") if not env.get(name)]
        if missing:
            raise InvalidInputError(f"environment variable(s) not set: {', '.join(missing)}")
        paper_text = env.get("APCA_PAPER", "true").strip().lower()
        if paper_text not in _TRUE | _FALSE:
            raise InvalidInputError("APCA_PAPER must be one of true/false, yes/no, on/off, 1/0")
        return cls(env["APCA_API_KEY_ID"], env["APCA_API_SECRET_KEY"], paper=paper_text in _TRUE)

    @property
    def endpoint(self) -> str:
        """The trading endpoint these credentials belong to (paper or live)."""
        return PAPER_ENDPOINT if self.paper else LIVE_ENDPOINT

    def fingerprint(self, key: bytes) -> str:
        """The account fingerprint: HMAC-SHA256(key, key id + endpoint), truncated hex.

        It identifies an account in logs, health reports and the audit trail without revealing
        the key id; it is never derived from the secret.
        """
        message = f"{self.api_key_id}\n{self.endpoint}".encode()
        return hmac.digest(key, message, "sha256").hex()[:FINGERPRINT_HEX_CHARS]

    def sensitive_values(self) -> tuple[str, str]:
        """The strings that must never appear in output: the key id and the secret."""
        return (self.api_key_id, self.secret_key.reveal())

    def __repr__(self) -> str:
        return f"Credentials(api_key_id={REDACTED}, secret_key={REDACTED}, paper={self.paper})"
