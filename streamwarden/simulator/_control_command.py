"""``streamwarden simulator publish|drop|mute|unmute|stats``: drive a running simulator from
another process.

::

    streamwarden simulator publish quote --url URL --symbol S --bid PRICE --ask PRICE
                                         [--bid-size N] [--ask-size N]
    streamwarden simulator publish trade --url URL --symbol S --price PRICE [--size N]
                                         [--trade-id N]
    streamwarden simulator publish bar   --url URL --symbol S --open P --high P --low P
                                         --close P --volume N [--trade-count N] [--vwap P]
    streamwarden simulator publish fill  --url URL --symbol S [--event EVENT] [--side buy|sell]
                                         [--qty Q] [--price PRICE] [--order-id UUID]
                                         [--position-qty Q] [--client-order-id ID]
    streamwarden simulator publish crypto-quote --url URL --symbol S --bid P --ask P
                                         [--bid-size Q] [--ask-size Q]
    streamwarden simulator publish crypto-trade --url URL --symbol S --price P [--size Q]
                                         [--trade-id N]
    streamwarden simulator publish option-quote --url URL --symbol OCC --bid P --ask P
                                         [--bid-size N] [--ask-size N]
    streamwarden simulator publish option-trade --url URL --symbol OCC --price P [--size N]
    streamwarden simulator publish news  --url URL --headline H [--symbols S,S] [--summary T]
                                         [--author A] [--source S] [--content T]
                                         [--article-url URL] [--article-id N]
    streamwarden simulator drop  --url URL [--kind KIND]
    streamwarden simulator mute|unmute --url URL
    streamwarden simulator stats --url URL

``URL`` is the simulator's ``http://HOST:PORT`` (its banner prints it). Each command sends one
request of :mod:`streamwarden.simulator._control` (standard library HTTP, no proxy) and prints
how many connections the message was sent to (``drop``: how many were dropped; ``mute`` and
``unmute``: ``muted`` or ``unmuted``; ``stats``: the stats as JSON). Bad arguments exit 2; a
simulator that cannot be reached or refuses the request is reported as a typed error, which the
CLI prints on one line with exit status 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import urllib.error
import urllib.request
import uuid
from decimal import Decimal, InvalidOperation
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode, urlsplit

from streamwarden.arguments import bounded_number
from streamwarden.errors import InvalidInputError
from streamwarden.simulator._control import ACTIONS, CONTROL_HEADER, CONTROL_PATH
from streamwarden.simulator._errors import SimulatorError
from streamwarden.simulator.orders import ORDER_STATUS
from streamwarden.simulator.stats import MARKET_DATA, STREAM_KINDS

#: Control parameters read from another argparse attribute (``--url`` is the simulator's).
_DESTS = {"url": "article_url"}
CONTROL_TIMEOUT = 10.0
"""Seconds a control command waits for the simulator's answer (its own bound is 5 s)."""


def simulator_url(text: str) -> str:
    """An argparse type: the simulator's address, ``http://HOST:PORT``, without a path.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    url = urlsplit(text)
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme != "http" or not url.hostname or port is None \
            or url.path not in ("", "/") or url.query or url.fragment:
        raise argparse.ArgumentTypeError(
            f"expected the simulator's address as http://HOST:PORT, got {text!r}")
    return f"http://{url.netloc}"


def _decimal(text: str, *, positive: bool = True) -> str:
    """An argparse type: a finite decimal number (positive unless told), kept as written."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive number" if positive else "a finite number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
    return text


def _order_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a UUID, got {text!r}") from None


def add_control_commands(controls: argparse._SubParsersAction[Any]) -> None:
    """Add ``publish`` (quote, trade, bar, fill), ``drop``, ``mute``, ``unmute`` and ``stats``
    to the ``simulator`` command's subcommands; each sets ``control_handler``."""
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", type=simulator_url, required=True,
                     help="the running simulator's http://HOST:PORT (printed in its banner)")
    publish = controls.add_parser(
        "publish", help="publish a quote, trade, bar or trade update into a running simulator",
        description="Send one message to the running simulator's subscribers; prints how many "
                    "connections it was sent to.")
    kinds = publish.add_subparsers(dest="publish", metavar="MESSAGE", required=True)
    _add_quote(kinds.add_parser("quote", parents=[url], help="a quote"))
    _add_trade(kinds.add_parser("trade", parents=[url], help="a trade"))
    _add_bar(kinds.add_parser("bar", parents=[url], help="a minute bar"))
    _add_fill(kinds.add_parser("fill", parents=[url],
                               help="a trade update (a fill unless --event says otherwise)"))
    _add_kind_messages(kinds, url)
    drop = controls.add_parser(
        "drop", parents=[url], help="drop a running simulator's connections now",
        description="Abort every open connection of one kind (no close frame; clients "
                    "reconnect); prints how many were dropped.")
    drop.add_argument("--kind", choices=STREAM_KINDS, default=MARKET_DATA,
                      help=f"the connections to drop (default {MARKET_DATA})")
    drop.set_defaults(control_handler=partial(send, "drop"))
    for action, what in (("mute", "drop every data message from now on; sockets stay open"),
                         ("unmute", "send data messages again")):
        switch = controls.add_parser(action, parents=[url], help=f"{what} (the mute fault)",
                                     description=f"Switch the running simulator's mute fault: "
                                                 f"{what}.")
        switch.set_defaults(control_handler=partial(send, action))
    stats = controls.add_parser("stats", parents=[url], help="a running simulator's stats",
                                description="Print the running simulator's stats as JSON.")
    stats.set_defaults(control_handler=partial(send, "stats"))


def _add_quote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--bid", dest="bid_price", type=_decimal, required=True, metavar="PRICE")
    parser.add_argument("--ask", dest="ask_price", type=_decimal, required=True, metavar="PRICE")
    parser.add_argument("--bid-size", type=bounded_number(int), metavar="N", help="default 1")
    parser.add_argument("--ask-size", type=bounded_number(int), metavar="N", help="default 1")
    parser.set_defaults(control_handler=partial(send, "quote"))


def _add_trade(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--price", type=_decimal, required=True)
    parser.add_argument("--size", type=bounded_number(int), metavar="N", help="default 1")
    parser.add_argument("--trade-id", type=bounded_number(int), metavar="N",
                        help="default: the next of the simulator's counter")
    parser.set_defaults(control_handler=partial(send, "trade"))


def _add_bar(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", required=True)
    for name in ("open", "high", "low", "close"):
        parser.add_argument(f"--{name}", dest=f"{name}_price", type=_decimal, required=True,
                            metavar="PRICE")
    parser.add_argument("--volume", type=bounded_number(int), required=True, metavar="N")
    parser.add_argument("--trade-count", type=bounded_number(int), metavar="N",
                        help="default 1")
    parser.add_argument("--vwap", type=_decimal, metavar="PRICE", help="default: the close")
    parser.set_defaults(control_handler=partial(send, "bar"))


def _add_fill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--event", choices=tuple(ORDER_STATUS), default="fill", metavar="EVENT",
                        help=f"the trade_updates event: {', '.join(ORDER_STATUS)} "
                             f"(default fill)")
    parser.add_argument("--side", choices=("buy", "sell"), help="default buy")
    parser.add_argument("--qty", type=_decimal, help="quantity (default 1)")
    parser.add_argument("--price", type=_decimal,
                        help="execution price (needed by fill and partial_fill)")
    parser.add_argument("--order-id", type=_order_id, metavar="UUID",
                        help="default: a new one")
    parser.add_argument("--position-qty", type=partial(_decimal, positive=False), metavar="Q",
                        help="the position after the execution (default: the quantity, "
                             "negative for a sell)")
    parser.add_argument("--client-order-id", metavar="ID",
                        help="the id your order carries (default: derived from the order id)")
    parser.set_defaults(control_handler=partial(send, "trade_update"))


def _add_kind_messages(kinds: argparse._SubParsersAction[Any],
                       url: argparse.ArgumentParser) -> None:
    """``crypto-quote``, ``crypto-trade``, ``option-quote``, ``option-trade`` and ``news``."""
    for name, sizes in (("crypto-quote", _decimal), ("option-quote", bounded_number(int))):
        quote = kinds.add_parser(name, parents=[url], help=f"a {name.split('-')[0]} quote")
        quote.add_argument("--symbol", required=True)
        quote.add_argument("--bid", dest="bid_price", type=_decimal, required=True,
                           metavar="PRICE")
        quote.add_argument("--ask", dest="ask_price", type=_decimal, required=True,
                           metavar="PRICE")
        quote.add_argument("--bid-size", type=sizes, metavar="Q", help="default 1")
        quote.add_argument("--ask-size", type=sizes, metavar="Q", help="default 1")
        quote.set_defaults(control_handler=partial(send, name.replace("-", "_")))
    for name, size in (("crypto-trade", _decimal), ("option-trade", bounded_number(int))):
        trade = kinds.add_parser(name, parents=[url], help=f"a {name.split('-')[0]} trade")
        trade.add_argument("--symbol", required=True)
        trade.add_argument("--price", type=_decimal, required=True)
        trade.add_argument("--size", type=size, metavar="Q", help="default 1")
        if name == "crypto-trade":
            trade.add_argument("--trade-id", type=bounded_number(int), metavar="N",
                               help="default 1")
        trade.set_defaults(control_handler=partial(send, name.replace("-", "_")))
    news = kinds.add_parser("news", parents=[url], help="a news article")
    news.add_argument("--headline", required=True)
    news.add_argument("--symbols", metavar="S,S", help="comma-separated (default none)")
    for option in ("summary", "author", "source", "content"):
        news.add_argument(f"--{option}", metavar="TEXT")
    news.add_argument("--article-url", metavar="URL", help="the article's link")
    news.add_argument("--article-id", type=bounded_number(int), metavar="N",
                      help="default: the next of the simulator's counter")
    news.set_defaults(control_handler=partial(send, "news"))


def send(action: str, args: argparse.Namespace) -> int:
    """Send the control request of ``action`` with the arguments given and print its answer;
    returns 0.

    Raises:
        InvalidInputError: the simulator refused the values (HTTP 400; nothing was published).
        SimulatorError: the simulator cannot be reached, refused the request otherwise, or
            answered with something that is not a control answer.

    Thread-safety: safe to call from any thread (it writes one line, or the stats, to
    standard output).
    """
    given = {name: str(getattr(args, _DESTS.get(name, name)))
             for name in ACTIONS[action].parameters
             if getattr(args, _DESTS.get(name, name), None) is not None}
    answer = request(args.url, action, given)
    key = ACTIONS[action].answer
    if key is None:
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
        return 0
    if key == "muted":
        if not isinstance(answer.get(key), bool):
            raise SimulatorError(f"unexpected answer from {args.url}: {answer!r}",
                                 operation=f"simulator.control.{action}")
        sys.stdout.write("muted\n" if answer[key] else "unmuted\n")
        return 0
    count = answer.get(key)
    if not isinstance(count, int):
        raise SimulatorError(f"unexpected answer from {args.url}: {answer!r}",
                             operation=f"simulator.control.{action}")
    connections = f"{count:d} connection" + ("" if count == 1 else "s")
    if action == "drop":
        sys.stdout.write(f"dropped {connections} ({args.kind})\n")
    else:
        what = args.event if action == "trade_update" else action
        subject = repr(args.headline) if action == "news" else args.symbol
        sys.stdout.write(f"{what} {subject} sent to {connections}\n")
    return 0


def request(url: str, action: str, parameters: dict[str, str],
            timeout: float = CONTROL_TIMEOUT) -> dict[str, Any]:
    """``GET {url}/control/{action}?{parameters}``; returns the JSON answer.

    No proxy is used: the simulator answers only requests from loopback.

    Raises:
        InvalidInputError: the simulator refused the values (HTTP 400).
        SimulatorError: the simulator cannot be reached, refused the request otherwise, or
            did not answer with a JSON object within ``timeout`` seconds.

    Thread-safety: safe to call from any thread.
    """
    operation = f"simulator.control.{action}"
    target = f"{url}{CONTROL_PATH}{action}"
    if parameters:
        target += f"?{urlencode(parameters)}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(target, headers={CONTROL_HEADER: "1"}),
                         timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise _refusal(action, exc) from None
    except (OSError, http.client.HTTPException) as exc:
        raise SimulatorError(f"cannot reach the simulator at {url}: {_reason(exc)}",
                             operation=operation) from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise SimulatorError(f"unexpected answer from {url}: {body[:200]!r}",
                             operation=operation)
    return answer


def _refusal(action: str, error: urllib.error.HTTPError) -> Exception:
    """The typed error for an HTTP error answer: the simulator's own reason when it gave one."""
    body = error.read().decode("utf-8", "replace")
    try:
        reason = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        reason = body.strip().splitlines()[0] if body.strip() else error.reason
    operation = f"simulator.control.{action}"
    if error.code == HTTPStatus.BAD_REQUEST:
        return InvalidInputError(f"the simulator refused {action}: {reason}",
                                 operation=operation)
    return SimulatorError(f"the simulator refused {action}: {reason} (HTTP {error.code})",
                          operation=operation)


def _reason(error: BaseException) -> str:
    """A one-line reason for a failed request (``Connection refused``, ``timed out``)."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        return _reason(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
