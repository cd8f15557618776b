"""The hash chain: canonical encoding of a record's content and its SHA-256 link.

``row_hash = sha256(prev_hash || canonical(record))`` (hex). The first record's ``prev_hash`` is
:data:`GENESIS_HASH`. ``canonical`` depends on the record's ``schema_version``, so that rows
written by an older version stay verifiable:

* **2** (current): for each column but the two hashes, in :data:`CONTENT_FIELDS` order, the
  byte ``0x1f`` followed by Python's ``ascii()`` of the value as stored: ``None``, an integer
  in decimal, or a quoted string with every non-ASCII or unprintable character escaped. The
  timestamp is stored as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, ``details`` as its canonical
  JSON text (sorted keys, compact, UTF-8). Every value's form is unambiguous (strings are
  quoted, ``0x1f`` inside one is escaped), so different contents never encode alike; and
  the bytes can be built from a row as the database returns it, without decoding it first,
  which is what makes verification fast.
* **1**: compact JSON with sorted keys over every column except the two hashes, timestamps in
  ISO 8601 UTC with microseconds.

>>> stored_time(datetime(2026, 1, 2, 9, 30, tzinfo=UTC))
'2026-01-02 09:30:00.000000'
>>> details_text({"b": [1, "é"], "a": None})
'{"a":null,"b":[1,"é"]}'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import fields, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from streamwarden.audit.records import AuditRecord
from streamwarden.errors import InvalidInputError

GENESIS_HASH = "0" * 64
_UNHASHED = ("prev_hash", "row_hash")
_HASHED_FIELDS = tuple(f.name for f in fields(AuditRecord) if f.name not in _UNHASHED)
#: The content of a version 2 row, in hashing (and table) order.
CONTENT_FIELDS: tuple[str, ...] = (
    "seq", "event_id", "occurred_at", "lifecycle_id", "fingerprint", "kind", "event",
    "from_state", "to_state", "refs_before", "refs_after", "lease_id", "owner",
    "correlation_id", "causation_id", "host", "pid", "outcome", "error_type", "error_message",
    "details", "schema_version",
)
#: A row as stored: ``prev_hash``, the content fields, ``row_hash`` (:func:`raw_row`).
RAW_FIELDS: tuple[str, ...] = ("prev_hash", *CONTENT_FIELDS, "row_hash")
RawRow = tuple[Any, ...]
# prev_hash, then "\x1f" + ascii(value) per content field; the trailing row_hash is consumed
# and not printed, so that a stored row formats as it comes from the database.
V2_FORMAT = "%s" + "\x1f%a" * len(CONTENT_FIELDS) + "%.0s"
_V2_CONTENT_FORMAT = V2_FORMAT[:-len("%.0s")]
_SEQ = RAW_FIELDS.index("seq")
_VERSION = RAW_FIELDS.index("schema_version")
_TIME = RAW_FIELDS.index("occurred_at")
_DETAILS = RAW_FIELDS.index("details")
_RAW_VALUES = attrgetter(*RAW_FIELDS)
# One encoder for every call (json.dumps with options builds a new one each time).
_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                         allow_nan=False)


def stored_time(value: datetime) -> str:
    """``value`` in UTC as the table stores it: ``YYYY-MM-DD HH:MM:SS.ffffff``.

    Raises:
        InvalidInputError: if ``value`` is naive.

    Thread-safety: pure function.
    """
    if value.tzinfo is None:
        raise InvalidInputError("audit timestamps must be timezone-aware")
    utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    # isoformat pads the year to four digits: the first 26 characters leave out "+00:00".
    return utc.isoformat(" ", "microseconds")[:26]


def details_text(details: Mapping[str, Any]) -> str:
    """The canonical JSON text of ``details``: sorted keys, compact, UTF-8, no NaN.

    Raises:
        InvalidInputError: if ``details`` is not JSON-serialisable.

    Thread-safety: pure function.
    """
    if type(details) is dict and not details:  # most records carry no details
        return "{}"
    try:
        return _JSON.encode(dict(details))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"audit details must be JSON-serialisable: {exc}") from None


def raw_row(record: AuditRecord) -> RawRow:
    """``record`` as a stored row (:data:`RAW_FIELDS`): timestamp and details as text.

    Raises:
        InvalidInputError: if the timestamp is naive or the details not JSON-serialisable.

    Thread-safety: pure function.
    """
    values = _RAW_VALUES(record)
    return (*values[:_TIME], stored_time(record.occurred_at), *values[_TIME + 1:_DETAILS],
            details_text(record.details), *values[_DETAILS + 1:])


def raw_hash(row: RawRow) -> str:
    """The version 2 ``row_hash`` of a stored row (its own ``row_hash`` is ignored).

    Thread-safety: pure function.
    """
    return hashlib.sha256((V2_FORMAT % row).encode("utf-8", "surrogatepass")).hexdigest()


def _encode_v1(value: object) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInputError("audit timestamps must be timezone-aware")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    raise TypeError(type(value).__name__)


def _canonical_v1(record: AuditRecord) -> bytes:
    content = {name: getattr(record, name) for name in _HASHED_FIELDS}
    content["details"] = dict(record.details)
    try:
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=_encode_v1,
                          ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"audit details must be JSON-serialisable: {exc}") from None
    return text.encode()


def canonical(record: AuditRecord) -> bytes:
    """The canonical bytes of ``record``'s content (every column but the hashes), in the
    encoding of its ``schema_version``.

    Raises:
        InvalidInputError: if ``details`` is not JSON-serialisable, the timestamp is naive, or
            the schema version is not one this version of streamwarden knows.

    Thread-safety: pure function.
    """
    if record.schema_version == 2:
        return (V2_FORMAT % ("", *raw_row(record)[1:])).encode()
    if record.schema_version == 1:
        return _canonical_v1(record)
    raise InvalidInputError(f"unknown audit schema_version {record.schema_version!r}")


def link(record: AuditRecord, prev_hash: str) -> str:
    """The row hash of ``record`` following a row whose hash is ``prev_hash``.

    Raises:
        InvalidInputError: as :func:`canonical`.
    """
    return hashlib.sha256(prev_hash.encode("utf-8", "surrogatepass") + canonical(record)
                          ).hexdigest()


def seal(record: AuditRecord, *, seq: int, prev_hash: str) -> AuditRecord:
    """``record`` with its sequence number and chain hashes set.

    Raises:
        InvalidInputError: if the record's details are not JSON-serialisable.

    Thread-safety: pure function.
    """
    return sealed_record(record, seal_row(record, raw_row(record), seq=seq,
                                          prev_hash=prev_hash))


def seal_row(record: AuditRecord, row: RawRow, *, seq: int, prev_hash: str) -> RawRow:
    """The row ``record`` is stored as when sealed as number ``seq`` after ``prev_hash``,
    given ``row``, its :func:`raw_row` (so that each value is encoded once).

    Raises:
        InvalidInputError: if the record's schema version is not 2 and it cannot be encoded
            in its own (see :func:`canonical`).

    Thread-safety: pure function.
    """
    if record.schema_version == 2:  # appends are hot: one format, one hash, two tuples
        head = (prev_hash, seq, *row[_SEQ + 1:-1])
        text = _V2_CONTENT_FORMAT % head
        return (*head, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
    numbered = replace(record, seq=seq, prev_hash=prev_hash, row_hash=None)
    return (*raw_row(numbered)[:-1], link(numbered, prev_hash))


def sealed_record(record: AuditRecord, row: RawRow) -> AuditRecord:
    """``record`` with the ``seq`` and hashes of ``row``, the row it was sealed as
    (:func:`seal_row`).

    Thread-safety: pure function.
    """
    sealed: AuditRecord = object.__new__(AuditRecord)
    # A plain copy of the frozen instance's fields: dataclasses.replace would re-run
    # __init__ field by field.
    sealed.__dict__.update(record.__dict__, seq=row[_SEQ], prev_hash=row[0],
                           row_hash=row[-1])
    return sealed


def renumbered(row: RawRow, seq: object) -> RawRow:
    """``row`` with its ``seq`` replaced (to hash it as if it were at another place)."""
    return (*row[:_SEQ], seq, *row[_SEQ + 1:])


def schema_version_of(row: RawRow) -> object:
    """The ``schema_version`` column of a stored row, as stored."""
    return row[_VERSION]
