"""structlog logging for streamwarden: constant event names, key-value fields, no secrets.

streamwarden does not touch the application's global structlog configuration. Each manager logs
through its own processor chain (:func:`make_logger`) onto the standard-library logger
``streamwarden``, so the application keeps control of handlers and levels. The chain merges
contextvars (so a ``correlation_id`` bound with ``structlog.contextvars`` appears on every line),
adds level and UTC timestamp, renders exceptions, redacts secrets, and renders key=value text or,
with ``STREAMWARDEN_LOG_FORMAT=json``, one JSON object per line.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog

from streamwarden.credentials import REDACTED, Secret

LOGGER_NAME = "streamwarden"
LOG_FORMAT_ENV = "STREAMWARDEN_LOG_FORMAT"

# Event names. A log line's ``event`` is always one of these constants; details go in fields.
TRANSITION = "lifecycle.transition"
TRANSITION_REJECTED = "lifecycle.transition_rejected"
LIFECYCLE_FAILED = "lifecycle.failed"
INVARIANT_VIOLATED = "lifecycle.invariant_violated"
LEASE_GRANTED = "lease.granted"
LEASE_RELEASED = "lease.released"
LEASE_REVOKED = "lease.revoked"
RELEASE_IGNORED = "lease.release_ignored"
CALLBACK_FAILED = "lease.callback_failed"
TRANSPORT_STALE_CALLBACK = "transport.stale_callback"
TRANSPORT_STOP_TIMEOUT = "transport.stop_timeout"
TRANSPORT_STOP_FAILED = "transport.stop_failed"
SUPERVISOR_FAILED = "lifecycle.supervisor_failed"
AUDIT_WRITE_FAILED = "audit.write_failed"
AUDIT_FINAL_RECORD_LOST = "audit.final_record_lost"
AUDIT_NOT_DURABLE = "audit.not_durable"
AUDIT_CHECKPOINT_WRITTEN = "audit.checkpoint_written"
AUDIT_CHECKPOINT_FAILED = "audit.checkpoint_failed"
AUDIT_CHECKPOINT_KEY_EXPOSED = "audit.checkpoint_key_exposed"
MANAGER_CLOSED = "manager.closed"
CALLBACK_WORKERS_STUCK = "manager.callback_workers_stuck"


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


def _renderer(log_format: str | None) -> structlog.typing.Processor:
    chosen = (log_format or os.environ.get(LOG_FORMAT_ENV, "")).strip().lower()
    if chosen == "json":
        return structlog.processors.JSONRenderer(sort_keys=True)
    return structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"])


class RedactedBoundLogger(structlog.stdlib.BoundLogger):
    """A stdlib-backed structlog logger whose ``exception`` never hands the raw exception to
    the stdlib logger.

    structlog's own ``exception`` calls ``logging.Logger.exception``, which attaches
    ``exc_info`` to the stdlib record: any handler would then print the unredacted traceback
    (secrets in exception texts included) after the redacted line. Here the traceback is
    rendered, and redacted, by the processors only.
    """

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self.error(event, *args, **kw)


def make_logger(
    redactor: SecretRedactor, *, log_format: str | None = None
) -> structlog.stdlib.BoundLogger:
    """A structlog logger writing redacted lines to the stdlib logger ``streamwarden``.

    Args:
        redactor: the redactor that knows this manager's sensitive strings.
        log_format: ``"json"`` or ``"text"``; default from ``STREAMWARDEN_LOG_FORMAT``.

    Thread-safety: the returned logger may be used from any thread.
    """
    processors: list[structlog.typing.Processor] = [
        structlog.stdlib.filter_by_level,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
        _renderer(log_format),
    ]
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(LOGGER_NAME),
        processors=processors,
        wrapper_class=RedactedBoundLogger,
    )
    return logger
