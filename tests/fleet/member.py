"""A fleet member in its own process, for the fleet tests: claims one stream key and prints one
JSON line per ownership change (with the wall-clock time), until killed or told to stop.

Usage: ``python -m tests.fleet.member URL FINGERPRINT MEMBER ADVERTISE [default]``
(``default``: the default FleetTiming instead of the short one); a line ``stop`` on stdin
releases the key and exits.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from streamwarden._keys import MARKET_DATA, StreamKey
from streamwarden.fleet import Fleet, FleetTiming, Ownership

#: Short bounds so that the tests stay fast; the inequalities of FleetTiming still hold.
TIMING = FleetTiming(heartbeat_interval=0.5, heartbeat_timeout=0.5, step_down_grace=0.5,
                     takeover_wait=1.5)


_PRINTING = threading.Lock()


def _line(event: dict[str, object]) -> None:
    """One whole line per event: ``tell`` runs on the fleet's thread while the main thread
    prints ``started``, and ``print`` writes the text and its newline separately."""
    with _PRINTING:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def main(url: str, fingerprint: str, member: str, advertise: str, timing: str = "") -> None:
    key = StreamKey(fingerprint, MARKET_DATA, True, "iex")

    def tell(ownership: Ownership) -> None:
        _line({"t": time.time(), "role": ownership.role, "epoch": ownership.epoch,
               "owner": ownership.owner, "url": ownership.advertised_url})

    chosen = FleetTiming() if timing == "default" else TIMING
    with Fleet(url, advertise=advertise, member=member, timing=chosen) as fleet:
        fleet.claim(key, tell)
        _line({"t": time.time(), "role": "started"})
        sys.stdin.readline()
        fleet.release(key)


if __name__ == "__main__":
    main(*sys.argv[1:6])
