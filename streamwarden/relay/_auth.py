"""Downstream authentication: who may use the relay, and under which name.

A client authenticates as Alpaca's clients do (key id and secret). Accepted are:

* the account's own key id and secret (the relay's upstream credentials): the client's name is
  its address;
* a client token: key id = a client name listed in the ``--clients`` file, secret = that
  client's token; the file holds, one per line, ``name:sha256-hex`` (the SHA-256 of the token,
  in hex; blank lines and ``#`` comments are ignored), so the file holds no token itself.

Every comparison runs in constant time (``hmac.compare_digest``), an unknown name included.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamwarden.credentials import Credentials
from streamwarden.errors import InvalidInputError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_NO_DIGEST = "0" * 64  # compared against when the name is unknown: the same work either way


def token_digest(token: str) -> str:
    """The ``--clients`` file's digest of ``token``: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_clients(path: Path) -> dict[str, str]:
    """The name -> token digest table of a ``--clients`` file (see the module).

    Raises:
        InvalidInputError: unreadable file, or a line that is not ``name:sha256-hex`` (the
            line number is named, never its content), or a name listed twice.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the clients file {path}: {exc}") from None
    clients: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, digest = line.partition(":")
        name, digest = name.strip(), digest.strip().lower()
        if not _NAME.fullmatch(name) or not _DIGEST.fullmatch(digest):
            raise InvalidInputError(f"clients file {path}, line {number}: expected "
                                    "name:sha256-hex")
        if name in clients:
            raise InvalidInputError(f"clients file {path}, line {number}: {name} listed twice")
        clients[name] = digest
    return clients


@dataclass(frozen=True)
class Verdict:
    """An accepted client: its name (None: the account's own credentials, named by address)."""

    name: str | None


class Authenticator:
    """Checks a client's key id and secret against the account's and the client tokens.

    Thread-safety: immutable; safe from any thread.
    """

    def __init__(self, account: Credentials, clients: Mapping[str, str]) -> None:
        self._key = account.api_key_id.encode()
        self._secret = account.secret_key.reveal().encode()
        self._clients = dict(clients)

    def check(self, key: object, secret: object) -> Verdict | None:
        """The accepted client, or None when ``key`` and ``secret`` are refused."""
        if not isinstance(key, str) or not isinstance(secret, str):
            return None
        key_bytes, secret_bytes = key.encode(), secret.encode()
        account = (hmac.compare_digest(key_bytes, self._key)
                   & hmac.compare_digest(secret_bytes, self._secret))
        digest = self._clients.get(key, _NO_DIGEST)
        token = hmac.compare_digest(token_digest(secret), digest) and key in self._clients
        if account:
            return Verdict(None)
        return Verdict(key) if token else None
