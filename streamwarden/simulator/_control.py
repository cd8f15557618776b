"""The simulator's control interface: plain HTTP requests on the simulator's own port that
publish market data and trade updates, drop connections and read the stats, so that another
process (``streamwarden simulator publish ...``, curl, a test suite in any language) can drive a
running simulator.

::

    GET /control/quote?symbol=AAPL&bid_price=187.20&ask_price=187.22[&bid_size=N&ask_size=N]
    GET /control/trade?symbol=AAPL&price=187.21[&size=N&trade_id=N]
    GET /control/bar?symbol=AAPL&open_price=..&high_price=..&low_price=..&close_price=..
                    &volume=N[&trade_count=N&vwap=..]
    GET /control/trade_update?[event=fill&symbol=AAPL&side=buy&qty=1&price=..&order_id=UUID
                              &position_qty=..&client_order_id=..]
    GET /control/crypto_quote?symbol=BTC/USD&bid_price=..&ask_price=..[&bid_size=..&ask_size=..]
    GET /control/crypto_trade?symbol=BTC/USD&price=..[&size=..&trade_id=N]
    GET /control/option_quote?symbol=AAPL241220C00150000&bid_price=..&ask_price=..
                             [&bid_size=N&ask_size=N]
    GET /control/option_trade?symbol=AAPL241220C00150000&price=..[&size=N]
    GET /control/news?headline=..[&symbols=AAPL,TSLA&summary=..&author=..&source=..&url=..
                     &content=..&article_id=N]
    GET /control/drop[?kind=market_data|trade_updates|crypto_data|option_data|news]
    GET /control/mute
    GET /control/unmute
    GET /control/stats

The parameters are the keyword arguments of the :class:`~streamwarden.simulator.Simulator`
method of the same job (``publish_quote``, ``publish_trade``, ``publish_bar``,
``publish_trade_update``, ``publish_crypto_quote``, ``publish_crypto_trade``,
``publish_option_quote``, ``publish_option_trade``, ``publish_news`` (``symbols`` comma-separated),
``drop_connections``), with the same defaults and checks; timestamps
are the simulator's clock. Every request must carry the header ``X-Streamwarden-Control`` (any
value). The answer is JSON: ``{"sent_to": N}`` (how many connections the message was sent to),
``{"dropped": N}``, ``{"muted": true|false}`` (the ``mute`` fault, see
:mod:`streamwarden.simulator.faults`), or the stats; a refusal is ``{"error": "..."}`` with
status 400 (a bad or missing parameter: nothing was published), 403 (a peer that is not on
loopback, or no control header), 404 (no such action), 405 (not GET) or 503 (the simulator is
stopping, or the request did not finish in time).

Why GET: websockets reads no request body, and the older websockets versions streamwarden
supports hand over no other method. Such requests change state here, so they are protected
twice: only loopback peers are answered (binding the simulator to another address exposes its
WebSocket streams, never its control), and the control header, which a web page cannot add to a
request to another site without a CORS preflight that is refused here, keeps a browser on the
same machine from publishing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from streamwarden.errors import InvalidInputError, StreamwardenError
from streamwarden.simulator.events import CONTROL_REFUSED
from streamwarden.simulator.faults import Faults
from streamwarden.simulator.stats import STREAM_KINDS, SimulatorStats

if TYPE_CHECKING:
    import structlog
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request, Response

CONTROL_PATH = "/control/"
"""The prefix of every control request's path; the action's name follows it."""
CONTROL_HEADER = "X-Streamwarden-Control"
"""The header every control request must carry (any value)."""
_LARGEST_WHOLE = 2**63 - 1
"""The largest whole-number parameter: what every client's decoder can hold."""

Reply = tuple[HTTPStatus, dict[str, Any]]


class Controlled(Protocol):
    """What the control interface uses of a simulator besides the methods :data:`ACTIONS`
    name (:class:`~streamwarden.simulator.Simulator` is one)."""

    @property
    def quote_rate(self) -> float: ...
    @property
    def faults(self) -> Faults: ...
    def stats(self) -> SimulatorStats: ...


@dataclass(frozen=True)
class Action:
    """One control action: the simulator method it calls, its parameters and its answer.

    Attributes:
        method: the name of the :class:`Simulator` method called with the parameters.
        answer: the key of the method's result in the JSON answer; None for ``stats``, whose
            answer is :func:`stats_json`.
        required: parameters that must be given.
        optional: parameters that may be given (the method's defaults apply otherwise).
        whole: the parameters that are whole numbers; the others are passed as text.
        lists: the parameters that are comma-separated lists (passed as lists of text).
    """

    method: str
    answer: str | None
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    whole: frozenset[str] = frozenset()
    lists: frozenset[str] = frozenset()

    @property
    def parameters(self) -> tuple[str, ...]:
        """Every parameter the action takes, required ones first."""
        return self.required + self.optional


ACTIONS: Mapping[str, Action] = {
    "quote": Action("publish_quote", "sent_to", ("symbol", "bid_price", "ask_price"),
                    ("bid_size", "ask_size"), frozenset({"bid_size", "ask_size"})),
    "trade": Action("publish_trade", "sent_to", ("symbol", "price"), ("size", "trade_id"),
                    frozenset({"size", "trade_id"})),
    "bar": Action("publish_bar", "sent_to",
                  ("symbol", "open_price", "high_price", "low_price", "close_price", "volume"),
                  ("trade_count", "vwap"), frozenset({"volume", "trade_count"})),
    "trade_update": Action("publish_trade_update", "sent_to", (),
                           ("event", "symbol", "side", "qty", "price", "order_id",
                            "position_qty", "client_order_id")),
    "crypto_quote": Action("publish_crypto_quote", "sent_to", ("symbol", "bid_price", "ask_price"),
                           ("bid_size", "ask_size")),
    "crypto_trade": Action("publish_crypto_trade", "sent_to", ("symbol", "price"),
                           ("size", "trade_id"), frozenset({"trade_id"})),
    "option_quote": Action("publish_option_quote", "sent_to", ("symbol", "bid_price", "ask_price"),
                           ("bid_size", "ask_size"), frozenset({"bid_size", "ask_size"})),
    "option_trade": Action("publish_option_trade", "sent_to", ("symbol", "price"), ("size",),
                           frozenset({"size"})),
    "news": Action("publish_news", "sent_to", ("headline",),
                   ("symbols", "summary", "author", "source", "url", "content", "article_id"),
                   frozenset({"article_id"}), frozenset({"symbols"})),
    "drop": Action("drop_connections", "dropped", (), ("kind",)),
    "mute": Action("mute", "muted"),
    "unmute": Action("unmute", "muted"),
    "stats": Action("stats", None),
}
"""The actions, by name (the last part of the path)."""


def arguments(name: str, action: Action, query: str) -> dict[str, Any]:
    """The keyword arguments of ``action`` given by a URL query string.

    Raises:
        InvalidInputError: a malformed query, an unknown, repeated or missing parameter, or a
            whole-number parameter that is not one in 0..2**63-1.
    """
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidInputError(f"malformed query string {query!r}") from None
    given: dict[str, Any] = {}
    for key, value in pairs:
        if key not in action.parameters:
            expected = ", ".join(action.parameters) or "no parameters"
            raise InvalidInputError(f"{name} takes {expected}; got {key!r}")
        if key in given:
            raise InvalidInputError(f"{key} given twice")
        if key in action.whole:
            given[key] = _whole(key, value)
        elif key in action.lists:
            given[key] = [item for item in value.split(",") if item]
        else:
            given[key] = value
    missing = [key for key in action.required if key not in given]
    if missing:
        raise InvalidInputError(f"{name} needs {', '.join(missing)}")
    return given


def _whole(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= _LARGEST_WHOLE:
        raise InvalidInputError(f"{name} must be a whole number in 0..{_LARGEST_WHOLE}, "
                                f"got {text!r}")
    return value


def is_loopback(address: object) -> bool:
    """Whether a socket peer address (``(host, port, ...)``) is on loopback; IPv4 addresses
    mapped into IPv6 (``::ffff:127.0.0.1``) count as the IPv4 address."""
    if not isinstance(address, tuple) or not address:
        return False
    try:
        ip = ipaddress.ip_address(address[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def stats_json(simulator: Controlled) -> dict[str, Any]:
    """The simulator's settings, totals per stream kind and open connections, as JSON values
    (key ids but never a secret, as in the stats)."""
    stats = simulator.stats()
    return {
        "quote_rate": simulator.quote_rate,
        "faults": simulator.faults.describe(),
        "kinds": {kind: asdict(stats.kind(kind)) for kind in STREAM_KINDS},
        "open_connections": [
            {"id": c.id, "kind": c.kind, "path": c.path, "authenticated": c.authenticated,
             "key_id": c.key_id, "data_messages": c.data_messages,
             "subscription": {channel: sorted(symbols)
                              for channel, symbols in sorted(c.subscription.items())}}
            for kind in STREAM_KINDS for c in stats.open_connections(kind)
        ],
    }


class Control:
    """Answers the control requests of one simulator by calling its public methods.

    Thread-safety: :meth:`respond` runs on the simulator's loop and calls the simulator (whose
    methods wait for that loop) on a worker thread of the loop's default executor.
    """

    def __init__(self, simulator: Controlled, log: structlog.stdlib.BoundLogger) -> None:
        self._simulator = simulator
        self._log = log

    async def respond(self, connection: ServerConnection, request: Request) -> Response:
        """The HTTP answer to a control request (a path under :data:`CONTROL_PATH`)."""
        status, body = await self._reply(connection, request)
        response = connection.respond(status, json.dumps(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    async def _reply(self, connection: ServerConnection, request: Request) -> Reply:
        refusal = self._refusal(connection, request)
        if refusal is not None:
            return refusal
        url = urlsplit(request.path)
        name = url.path.removeprefix(CONTROL_PATH)
        action = ACTIONS.get(name)
        if action is None:
            return HTTPStatus.NOT_FOUND, {"error": f"no control action {name!r}; the actions "
                                                   f"are {', '.join(ACTIONS)}"}
        try:
            call = partial(self._run, action, arguments(name, action, url.query))
            return HTTPStatus.OK, await asyncio.get_running_loop().run_in_executor(None, call)
        except InvalidInputError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": exc.message}
        except StreamwardenError as exc:  # SimulatorError: stopping, or not done in time
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": exc.message}

    def _refusal(self, connection: ServerConnection, request: Request) -> Reply | None:
        # Older websockets versions hand over GET requests only and have no Request.method.
        method = getattr(request, "method", "GET")
        if method != "GET":
            return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"control requests are GET, "
                                                            f"not {method}"}
        if not is_loopback(connection.remote_address):
            self._log.warning(CONTROL_REFUSED, reason="not_loopback")
            return HTTPStatus.FORBIDDEN, {"error": "control requests are answered only from "
                                                  "loopback"}
        if CONTROL_HEADER not in request.headers:
            self._log.warning(CONTROL_REFUSED, reason="no_control_header")
            return HTTPStatus.FORBIDDEN, {"error": f"control requests need the header "
                                                   f"{CONTROL_HEADER}"}
        return None

    def _run(self, action: Action, given: dict[str, Any]) -> dict[str, Any]:
        if action.answer is None:
            return stats_json(self._simulator)
        return {action.answer: getattr(self._simulator, action.method)(**given)}
