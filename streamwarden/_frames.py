"""What a client sends on an Alpaca stream, decoded: shared by the two servers of Alpaca's
protocols here, the simulator and the relay.

Alpaca accepts JSON in text or binary frames; a binary frame on a MessagePack connection is
MessagePack.
"""

from __future__ import annotations

import json

import msgpack  # type: ignore[import-untyped]  # no stubs; alpaca-py's codec


def decode_frame(frame: bytes | str, codec: str) -> object:
    """The value a client frame carries on a connection speaking ``codec`` (``msgpack``, or a
    JSON codec).

    >>> decode_frame('{"action": "auth"}', "msgpack")
    {'action': 'auth'}

    Raises:
        ValueError: the frame is not valid in its encoding.

    Thread-safety: pure function.
    """
    if codec == "msgpack" and isinstance(frame, bytes):
        try:
            return msgpack.unpackb(frame)
        except (msgpack.UnpackException, ValueError) as exc:
            raise ValueError("invalid msgpack frame") from exc
    try:
        return json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("invalid JSON frame") from exc
