"""Text from the audit trail made safe for HTML and SVG, and the time formats of the report.

Every value that reaches the HTML report goes through :func:`escape`: owners, error messages
and ids come from the database and may be hostile. Besides the five HTML metacharacters, it
shows characters that are not printable (controls, bidirectional overrides, lone surrogates,
which a UTF-8 file cannot even hold) as ``\\uXXXX`` escapes, so that what the reviewer reads
is what is stored.
"""

from __future__ import annotations

import html
from datetime import datetime

from streamwarden.audit.report import display_time


def _visible(char: str) -> str:
    return char if char.isprintable() else f"\\u{ord(char):04x}"


def escape(value: object) -> str:
    """``str(value)`` escaped for HTML text and quoted attribute values alike.

    Thread-safety: pure function.
    """
    text = str(value)
    if not text.isprintable():
        text = "".join(map(_visible, text))
    return html.escape(text, quote=True)


def shorten(text: str, width: int) -> str:
    """``text``, cut to ``width`` characters with an ellipsis when longer.

    Thread-safety: pure function.
    """
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def utc(value: datetime | None) -> str:
    """``value`` as ``2026-01-02 03:04:05.000006 UTC``; ``""`` for None.

    Raises:
        InvalidInputError: if ``value`` is naive.

    Thread-safety: pure function.
    """
    return "" if value is None else display_time(value) + " UTC"
