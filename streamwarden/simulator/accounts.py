"""Which credentials the simulator accepts, checked without keeping any secret.

Configured secrets are reduced to a salted SHA-256 digest at construction; the plain text is not
stored anywhere in the simulator, so it cannot leak into stats, logs or reprs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping


class Accounts:
    """The accepted key id / secret pairs, or any non-empty pair when none are configured.

    Raises (on construction):
        ValueError: a configured key id or secret is empty or not a string.

    Thread-safety: immutable after construction; :meth:`accepts` may be called from any thread.
    """

    def __init__(self, credentials: Mapping[str, str] | None = None) -> None:
        self._salt = os.urandom(16)
        self._digests: dict[str, bytes] | None = None
        if credentials is not None:
            self._digests = {}
            for key_id, secret in credentials.items():
                if not _filled(key_id) or not _filled(secret):
                    raise ValueError("configured key ids and secrets must be non-empty strings")
                self._digests[key_id] = self._digest(secret)

    def _digest(self, secret: str) -> bytes:
        return hashlib.sha256(self._salt + secret.encode()).digest()

    def accepts(self, key_id: object, secret: object) -> bool:
        """Whether ``key_id`` and ``secret`` (as received, any type) are accepted."""
        if not _filled(key_id) or not _filled(secret):
            return False
        if self._digests is None:
            return True
        expected = self._digests.get(str(key_id))
        return expected is not None and hmac.compare_digest(expected, self._digest(str(secret)))

    def __repr__(self) -> str:
        described = "any" if self._digests is None else f"{len(self._digests)} configured"
        return f"Accounts({described})"


def _filled(value: object) -> bool:
    return isinstance(value, str) and value != ""
