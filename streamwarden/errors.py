"""Typed errors of streamwarden.

Every error carries the context a reader needs to act on it (``operation``, ``fingerprint`` of the
stream, lifecycle ``state``, ``correlation_id``) and never a secret: messages are built by
streamwarden from non-secret values, and text that comes from outside (SDK errors) is redacted by
the caller before it is put into an error.

Hierarchy (the contract in ARCHITECTURE.md)::

    StreamwardenError
      InvalidInputError (also ValueError)
      MalformedMessageError (also ValueError)
      InvalidTransitionError
      ManagerClosedError
      ConnectionStartError
        AuthenticationError, ConnectionLimitError, SubscriptionError, StartTimeoutError
      StopTimeoutError
      LeaseError
        LeaseRevokedError
          LeaseOverflowError
      WaitTimeoutError (also TimeoutError)
      ReentrancyError
      AuditError
        AuditUnavailableError, AuditSchemaError, AuditIntegrityError
        CheckpointError
"""

from __future__ import annotations

from typing import Self

_CONTEXT_FIELDS = ("operation", "fingerprint", "state", "correlation_id")
#: Why a connection did not start (:attr:`ConnectionStartError.cause`, and ``details.cause`` of a
#: ``start_failed`` record): the name lookup failed, the peer refused the TCP connection, the
#: TLS handshake failed, Alpaca refused the credentials, nothing answered in time, another
#: reason (the message says which), Alpaca refused the connection with 406 (connection limit
#: exceeded: another socket of the account holds the endpoint), or the WebSocket upgrade was
#: answered HTTP 429 (too many requests).
START_CAUSES = ("dns", "refused", "tls", "auth", "timeout", "other", "connection_limit",
                "rate_limit")


class StreamwardenError(Exception):
    """Base class of every error raised by streamwarden.

    Thread-safety: instances are immutable after construction; share them freely, but raise a
    :meth:`derive`-d copy in each thread so tracebacks do not mix.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        fingerprint: str | None = None,
        state: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.fingerprint = fingerprint
        self.state = state
        self.correlation_id = correlation_id

    def context(self) -> dict[str, str]:
        """The non-empty context fields, for logs and audit rows."""
        values = {name: getattr(self, name) for name in _CONTEXT_FIELDS}
        return {name: value for name, value in values.items() if value is not None}

    def derive(self, **overrides: str | None) -> Self:
        """A new error of the same type and message with some context fields replaced.

        Raises:
            TypeError: if an override names a field that is not a context field.
        """
        unknown = set(overrides) - set(_CONTEXT_FIELDS)
        if unknown:
            raise TypeError(f"not context fields: {sorted(unknown)}")
        fields: dict[str, str | None] = {name: getattr(self, name) for name in _CONTEXT_FIELDS}
        fields.update(overrides)
        return type(self)(self.message, **fields)

    def __str__(self) -> str:
        context = self.context()
        if not context:
            return self.message
        rendered = ", ".join(f"{name}={value}" for name, value in context.items())
        return f"{self.message} ({rendered})"


class InvalidInputError(StreamwardenError, ValueError):
    """Bad credentials, correlation id, symbol, timeout or setting; nothing was changed."""


class MalformedMessageError(StreamwardenError, ValueError):
    """A market-data message that cannot be read: a price, size or volume missing, not a
    number, not finite or negative; an unreadable symbol, timestamp or trade id; or a type that
    is not market data. Nothing is made up in its place: the message is dropped.

    ``field`` is the wire key at fault (``bp``, ``S``, ``t``, ...) and ``reason`` says what is
    wrong with it (``missing``, ``not a number``, ``not finite``, ``negative``, ``unreadable``,
    ``not an integer``, ``not text``, ``unknown type``); the message names both.
    """

    def __init__(self, message: str, *, field: str = "", reason: str = "",
                 operation: str | None = None, fingerprint: str | None = None,
                 state: str | None = None, correlation_id: str | None = None) -> None:
        super().__init__(message, operation=operation, fingerprint=fingerprint, state=state,
                         correlation_id=correlation_id)
        self.field = field
        self.reason = reason

    def derive(self, **overrides: str | None) -> Self:
        """As :meth:`StreamwardenError.derive`, keeping ``field`` and ``reason``."""
        derived = super().derive(**overrides)
        derived.field, derived.reason = self.field, self.reason
        return derived


class InvalidTransitionError(StreamwardenError):
    """The spec does not allow this event in the lifecycle's current state; nothing changed."""


class ManagerClosedError(StreamwardenError):
    """The connection manager was closed; it hands out no more leases."""


class ConnectionStartError(StreamwardenError):
    """The connection could not be brought to running.

    ``cause`` says why: one of :data:`START_CAUSES`. Unless given, it is the class's
    ``default_cause``: ``"auth"`` for AuthenticationError, ``"timeout"`` for StartTimeoutError,
    ``"other"`` otherwise (the message says more).
    """

    default_cause = "other"

    def __init__(
        self,
        message: str,
        *,
        cause: str | None = None,
        operation: str | None = None,
        fingerprint: str | None = None,
        state: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message, operation=operation, fingerprint=fingerprint, state=state,
                         correlation_id=correlation_id)
        self.cause: str = cause if cause is not None else self.default_cause

    def derive(self, **overrides: str | None) -> Self:
        """As :meth:`StreamwardenError.derive`, keeping ``cause``."""
        derived = super().derive(**overrides)
        derived.cause = self.cause
        return derived


class AuthenticationError(ConnectionStartError):
    """Alpaca refused the credentials (401, 402 or ``unauthorized``)."""

    default_cause = "auth"


class ConnectionLimitError(ConnectionStartError):
    """Alpaca refused a second connection for this account and endpoint (406): at a first start
    at once, on a reconnect after a drop once ``connection_limit_grace`` has run out."""

    default_cause = "connection_limit"


class SubscriptionError(ConnectionStartError):
    """Alpaca refused the subscription (405 symbol limit, 409 insufficient subscription)."""


class StartTimeoutError(ConnectionStartError):
    """No ``connected`` within ``start_timeout``. ``cause`` is the last failed attempt's
    (``"dns"``, ``"refused"``, ...) when one failed, else ``"timeout"``; the message then ends
    with that attempt's description."""

    default_cause = "timeout"


class StopTimeoutError(StreamwardenError):
    """A connection did not stop within ``stop_timeout``; its thread was abandoned."""


class LeaseError(StreamwardenError):
    """A lease was used after it was released."""


class LeaseRevokedError(LeaseError):
    """The lifecycle under the lease failed or was shut down; the lease is no longer usable."""


class LeaseOverflowError(LeaseRevokedError):
    """The lease's consumer fell so far behind that trade updates would have been dropped; the
    lease was revoked instead (trade updates are never dropped silently)."""


class WaitTimeoutError(StreamwardenError, TimeoutError):
    """A wait (for a message, a quote, a subscription acknowledgement) ran out of time; nothing
    changed."""


class ReentrancyError(StreamwardenError):
    """A blocking call was made on the manager's own engine thread, where it would wait for
    itself (for example from a custom transport); nothing changed."""


class ReplayError(StreamwardenError):
    """The trade updates a reconnect missed could not be fetched from Alpaca's trade events API;
    live delivery goes on (the failure is audited and logged)."""


class AuditError(StreamwardenError):
    """The audit trail could not be written, read or trusted."""


class AuditUnavailableError(AuditError):
    """The audit database is unreachable."""


class AuditSchemaError(AuditError):
    """The audit database's schema is behind; the message names the command to run."""


class AuditIntegrityError(AuditError):
    """Verification found a break in the hash chain."""


class InvariantViolationError(StreamwardenError):
    """A spec invariant failed at run time (checked only in debug mode)."""


class CheckpointError(AuditError):
    """A signed checkpoint or key could not be written, read or trusted.

    ``reason`` names what is wrong for a checkpoint that was read: ``malformed_checkpoint``,
    ``bad_signature`` (a trusted key's signature does not verify) or ``unknown_key`` (no
    trusted key signed it); ``write_failed`` when one could not be written.
    """

    def __init__(self, message: str, *, reason: str = "malformed_checkpoint",
                 operation: str | None = None, fingerprint: str | None = None,
                 state: str | None = None, correlation_id: str | None = None) -> None:
        super().__init__(message, operation=operation, fingerprint=fingerprint, state=state,
                         correlation_id=correlation_id)
        self.reason = reason


class FleetError(StreamwardenError):
    """The fleet database could not be reached or used (at start, or a bounded call to the
    fleet coordinator did not complete in time)."""
