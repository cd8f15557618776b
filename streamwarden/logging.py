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
from typing import Any

import structlog

from streamwarden._redaction import SecretRedactor

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
TRADE_UPDATES_REPLAYED = "transport.trade_updates_replayed"
TRADE_UPDATES_REPLAY_FAILED = "transport.trade_updates_replay_failed"
STREAM_STALE = "transport.stale"
TRANSPORT_CONNECT_FAILED = "transport.connect_failed"
MALFORMED_MESSAGE = "transport.malformed_message"
SUPERVISOR_FAILED = "lifecycle.supervisor_failed"
AUDIT_WRITE_FAILED = "audit.write_failed"
AUDIT_FINAL_RECORD_LOST = "audit.final_record_lost"
AUDIT_NOT_DURABLE = "audit.not_durable"
AUDIT_CHECKPOINT_WRITTEN = "audit.checkpoint_written"
AUDIT_CHECKPOINT_FAILED = "audit.checkpoint_failed"
AUDIT_CHECKPOINT_KEY_EXPOSED = "audit.checkpoint_key_exposed"
MANAGER_CLOSED = "manager.closed"
CALLBACK_WORKERS_STUCK = "manager.callback_workers_stuck"


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
