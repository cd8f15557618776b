"""streamwarden: shared, audited Alpaca WebSocket connections with a formally specified lifecycle.

The public API: :class:`ConnectionManager` hands out :class:`Lease` objects on shared connections
(alpaca-py's streams by default); :class:`Credentials` and :class:`Settings` configure it;
:class:`AuditLog` records every transition in SQLite or PostgreSQL; market data arrives as
:class:`Quote`, :class:`Trade` and :class:`Bar`; every error is a :class:`StreamwardenError`.
"""

from streamwarden.audit.log import AuditLog
from streamwarden.audit.memory import InMemoryAuditSink
from streamwarden.audit.records import AuditRecord, AuditSink
from streamwarden.config import Settings
from streamwarden.credentials import Credentials, Secret
from streamwarden.errors import (
    AuditError,
    AuditIntegrityError,
    AuditSchemaError,
    AuditUnavailableError,
    AuthenticationError,
    CheckpointError,
    ConnectionLimitError,
    ConnectionStartError,
    InvalidInputError,
    InvalidTransitionError,
    InvariantViolationError,
    LeaseError,
    LeaseRevokedError,
    ManagerClosedError,
    StartTimeoutError,
    StopTimeoutError,
    StreamwardenError,
    SubscriptionError,
)
from streamwarden.machine.health import HealthReport, LeaseHealth, LifecycleHealth
from streamwarden.machine.keys import StreamKey
from streamwarden.machine.leases import Lease, LeaseStatus
from streamwarden.machine.manager import ConnectionManager
from streamwarden.machine.market_data import Bar, Quote, Trade
from streamwarden.machine.transport import StreamMessage, Transport, TransportListener

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "AuditIntegrityError",
    "AuditLog",
    "AuditRecord",
    "AuditSchemaError",
    "AuditSink",
    "AuditUnavailableError",
    "AuthenticationError",
    "Bar",
    "CheckpointError",
    "ConnectionLimitError",
    "ConnectionManager",
    "ConnectionStartError",
    "Credentials",
    "HealthReport",
    "InMemoryAuditSink",
    "InvalidInputError",
    "InvalidTransitionError",
    "InvariantViolationError",
    "Lease",
    "LeaseError",
    "LeaseHealth",
    "LeaseRevokedError",
    "LeaseStatus",
    "LifecycleHealth",
    "ManagerClosedError",
    "Quote",
    "Secret",
    "Settings",
    "StartTimeoutError",
    "StopTimeoutError",
    "StreamKey",
    "StreamMessage",
    "StreamwardenError",
    "SubscriptionError",
    "Trade",
    "Transport",
    "TransportListener",
    "__version__",
]
