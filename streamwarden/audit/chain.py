"""The hash chain: canonical encoding of a record's content and its SHA-256 link.

``row_hash = sha256(prev_hash || canonical(record))`` where ``canonical`` is compact JSON with
sorted keys over every column except the two hashes, timestamps in ISO 8601 UTC with
microseconds. The first record's ``prev_hash`` is :data:`GENESIS_HASH`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

from streamwarden.audit.records import AuditRecord
from streamwarden.errors import InvalidInputError

GENESIS_HASH = "0" * 64
_UNHASHED = ("prev_hash", "row_hash")
_HASHED_FIELDS = tuple(f.name for f in fields(AuditRecord) if f.name not in _UNHASHED)


def _encode(value: object) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInputError("audit timestamps must be timezone-aware")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    raise TypeError(type(value).__name__)


def canonical(record: AuditRecord) -> bytes:
    """The canonical bytes of ``record``'s content (every column but the hashes).

    Raises:
        InvalidInputError: if ``details`` holds something that is not JSON-serialisable.
    """
    content = {name: getattr(record, name) for name in _HASHED_FIELDS}
    content["details"] = dict(record.details)
    try:
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=_encode,
                          ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"audit details must be JSON-serialisable: {exc}") from None
    return text.encode()


def link(record: AuditRecord, prev_hash: str) -> str:
    """The row hash of ``record`` following a row whose hash is ``prev_hash``."""
    return hashlib.sha256(prev_hash.encode() + canonical(record)).hexdigest()


def seal(record: AuditRecord, *, seq: int, prev_hash: str) -> AuditRecord:
    """``record`` with its sequence number and chain hashes set.

    Raises:
        InvalidInputError: if the record's details are not JSON-serialisable.
    """
    numbered = replace(record, seq=seq, prev_hash=prev_hash, row_hash=None)
    return replace(numbered, row_hash=link(numbered, prev_hash))
