"""Keeping secrets out of text: credentials a process has seen, and database passwords.

Standard library only, so that even a failing import elsewhere can be reported without a secret
(the command line's last-resort error message relies on it).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from streamwarden.credentials import REDACTED, Secret

_PASSWORD_IN_TEXT = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_SECRET_IN_TEXT = re.compile(r"(?i)\b(password|passfile|sslpassword)=[^&\s'\"]*")


def redact_text(text: str) -> str:
    """``text`` (an error message, a connection string) with ``user:password@`` and
    ``password=``, ``passfile=``, ``sslpassword=`` values replaced by ``***``.

    Thread-safety: pure function.
    """
    return _SECRET_IN_TEXT.sub(r"\1=***", _PASSWORD_IN_TEXT.sub(r"\1***@", text))


class SecretRedactor:
    """A structlog processor that removes secrets from every field of a log event.

    It replaces any :class:`~streamwarden.credentials.Secret` value with ``<redacted>``, and every
    occurrence of a registered sensitive string (key ids and secrets of the credentials a manager
    has seen) inside any string value, nested containers and rendered exceptions included. Place
    it after ``format_exc_info`` and before the renderer.

    Thread-safety: :meth:`register` and :meth:`__call__` may be called from any thread.
    """

    def __init__(self, sensitive: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._sensitive: tuple[str, ...] = ()
        self.register(*sensitive)

    def register(self, *values: str) -> None:
        """Add strings that must never appear in output (empty strings are ignored)."""
        with self._lock:
            merged = set(self._sensitive) | {value for value in values if value}
            # Longest first, so a secret that contains another is replaced whole.
            self._sensitive = tuple(sorted(merged, key=len, reverse=True))

    def redact_text(self, text: str) -> str:
        """``text`` with every registered sensitive string replaced by ``<redacted>``."""
        for value in self._sensitive:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def redact(self, value: object) -> object:
        """A copy of ``value`` with secrets removed, walking mappings, lists, tuples and sets."""
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            return {self.redact(key): self.redact(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact(item) for item in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact_text(repr(value) if isinstance(value, BaseException) else str(value))

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self.redact(event_dict[key])
        return event_dict
