"""An exclusive ``flock`` with a deadline, for files that several processes share."""

from __future__ import annotations

import fcntl
import time
from typing import IO


def lock_within(handle: IO[bytes], timeout: float) -> bool:
    """Take an exclusive lock on ``handle``'s file, waiting at most ``timeout`` seconds.

    Returns:
        True once locked (release with ``fcntl.flock(fd, LOCK_UN)``), False if another process
        held it for the whole ``timeout``.

    Thread-safety: flock locks belong to the open file; do not share ``handle`` across threads.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)  # flock has no timed wait: poll until the deadline
