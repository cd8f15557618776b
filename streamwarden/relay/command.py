"""The ``streamwarden relay`` command: serve Alpaca's stream protocols to the account's own
processes over one upstream connection per stream kind.

::

    streamwarden relay [--listen HOST:PORT] [--db URL] [--clients FILE]
                       [--tls-cert FILE --tls-key FILE] [--queue-size N] [--auth-timeout S]
                       [--metrics HOST:PORT] [--fleet URL --advertise URL]

Upstream credentials come from ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` (``APCA_PAPER``),
upstream URLs and bounds from the ``STREAMWARDEN_*`` settings (:meth:`Settings.from_env`), the
audit database from ``--db`` (else ``STREAMWARDEN_DB_URL``, else the library's default SQLite
file). It prints one line, ``streamwarden relay listening on ws://HOST:PORT`` (``wss://`` with
TLS), and with ``--metrics`` a second, ``streamwarden relay metrics on http://HOST:PORT``
(``/metrics``, ``/healthz``, ``/readyz``: :func:`streamwarden.metrics.serve_probes`; needs the
``metrics`` extra), then serves until SIGINT or SIGTERM, on which it closes every client
(1001), releases their leases and closes the manager within ``stop_timeout``, and exits 0 (as
the simulator does: a stop asked for is a clean end). Warnings (clients cut off, refused
credentials) go to stderr as log lines.

With ``--fleet URL --advertise URL`` the relay is a member of a fleet coordinated in that
PostgreSQL database (:mod:`streamwarden.fleet`): per stream key one member owns the upstream
connection to Alpaca, and the others connect to the owner's advertised address as their
upstream, so any relay of the fleet serves its clients; when the owner dies, another takes over.
``--advertise`` is this relay's own address as the other members reach it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from streamwarden.arguments import positive_int, positive_number
from streamwarden.errors import InvalidInputError

DEFAULT_LISTEN = "127.0.0.1:8765"


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``relay`` to the command line's subcommands (handler set as a default)."""
    parser = commands.add_parser(
        "relay", help="serve Alpaca's stream protocols to the account's own processes",
        description="A WebSocket server speaking Alpaca's stream protocols on Alpaca's paths "
                    "(/v2/<feed>, /v1beta3/crypto/us, /v1beta1/indicative, /v1beta1/opra, "
                    "/v1beta1/news, /stream): unmodified SDKs connect by changing their URL, "
                    "and share one upstream connection per stream kind. For one account "
                    "holder's own processes: market-data licences restrict redistribution.",
    )
    parser.add_argument("--listen", type=_listen, default=_listen(DEFAULT_LISTEN),
                        metavar="HOST:PORT",
                        help=f"address to serve on (default {DEFAULT_LISTEN}: loopback)")
    parser.add_argument("--db", default=None, metavar="URL",
                        help="audit database URL (default STREAMWARDEN_DB_URL, else "
                             "./streamwarden-audit.db)")
    parser.add_argument("--clients", type=Path, default=None, metavar="FILE",
                        help="client tokens, one 'name:sha256-hex-of-token' per line")
    parser.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                        help="serve wss:// with this certificate chain (PEM); needs --tls-key")
    parser.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                        help="the private key of --tls-cert (PEM)")
    parser.add_argument("--queue-size", type=positive_int, default=10_000, metavar="N",
                        help="messages queued to one client before it is cut off with 407 "
                             "(default 10000)")
    parser.add_argument("--auth-timeout", type=positive_number, default=10.0, metavar="S",
                        help="seconds a client has to authenticate before error 404 "
                             "(default 10)")
    parser.add_argument("--metrics", type=_listen, default=None, metavar="HOST:PORT",
                        help="serve /metrics, /healthz and /readyz there (loopback advised; "
                             "port 0 picks one; needs the 'metrics' extra)")
    parser.add_argument("--fleet", default=None, metavar="URL",
                        help="join the fleet coordinated in this PostgreSQL database "
                             "(needs --advertise)")
    parser.add_argument("--advertise", default=None, metavar="URL",
                        help="this relay's ws:// or wss:// address as the fleet's other "
                             "members reach it")
    parser.set_defaults(handler=run)


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise InvalidInputError("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInputError(f"cannot load the TLS certificate or key: {exc}") from None
    return context


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 after a clean stop.

    Raises:
        InvalidInputError: missing upstream credentials, a bad clients file or TLS files,
            ``--metrics`` without prometheus_client, ``--fleet`` without ``--advertise``.
        FleetError: the fleet database cannot be reached.
        AuditUnavailableError / AuditSchemaError: the audit database cannot be used.
        OSError: the address cannot be bound.
    """
    # Imported here: the command line stays fast for every other command.
    from streamwarden.config import Settings  # noqa: PLC0415
    from streamwarden.credentials import Credentials  # noqa: PLC0415
    from streamwarden.relay._auth import Authenticator, load_clients  # noqa: PLC0415

    if args.metrics is not None and importlib.util.find_spec("prometheus_client") is None:
        raise InvalidInputError("--metrics needs prometheus_client: "
                                "pip install 'streamwarden[metrics]'")
    fleet = _fleet(args)
    upstream = Credentials.from_env()
    clients = {} if args.clients is None else load_clients(args.clients)
    context = _ssl_context(args)
    # Every quote is forwarded or the client is cut: the relay's leases never conflate.
    settings = Settings.from_env(conflate_quotes=False)
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger("streamwarden").addHandler(handler)
    logging.getLogger("streamwarden").setLevel(logging.WARNING)
    return asyncio.run(_serve(args, upstream, Authenticator(upstream, clients), settings,
                              context=context, fleet=fleet))


def _fleet(args: argparse.Namespace) -> Any:
    """The fleet membership ``--fleet`` and ``--advertise`` ask for, or None.

    Raises:
        InvalidInputError: one of the two without the other, or a malformed URL.
    """
    if (args.fleet is None) != (args.advertise is None):
        raise InvalidInputError("--fleet and --advertise go together")
    if args.fleet is None:
        return None
    from streamwarden.fleet import Fleet  # noqa: PLC0415

    return Fleet(args.fleet, advertise=args.advertise)


def _serve_metrics(address: tuple[str, int] | None, manager: Any) -> Any:
    """Start the probe server when ``--metrics`` asks for one, and say where it listens."""
    if address is None:
        return None
    from streamwarden.metrics import serve_probes  # noqa: PLC0415

    probes = serve_probes(manager, *address)
    sys.stdout.write(f"streamwarden relay metrics on http://{address[0]}:{probes.port}\n")
    return probes


async def _serve(args: argparse.Namespace, upstream: Any, authenticator: Any, settings: Any, *,
                 context: ssl.SSLContext | None, fleet: Any) -> int:
    from streamwarden._redaction import SecretRedactor  # noqa: PLC0415
    from streamwarden.audit.log import AuditLog  # noqa: PLC0415
    from streamwarden.logging import make_logger  # noqa: PLC0415
    from streamwarden.relay._server import RelayOptions, RelayServer  # noqa: PLC0415
    from streamwarden.runtime.manager import AsyncConnectionManager  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = args.listen
    audit = await asyncio.to_thread(AuditLog.open, args.db, settings=settings)
    try:
        async with AsyncConnectionManager(audit=audit, settings=settings,
                                          fleet=fleet) as manager:
            server = RelayServer(manager, upstream, authenticator=authenticator, audit=audit,
                                 options=RelayOptions(host=host, port=port,
                                                      queue_size=args.queue_size,
                                                      auth_timeout=args.auth_timeout,
                                                      ssl_context=context),
                                 log=make_logger(SecretRedactor(upstream.sensitive_values())))
            await server.start()
            scheme = "wss" if context is not None else "ws"
            sys.stdout.write(f"streamwarden relay listening on {scheme}://{host}:{server.port}\n")
            probes = _serve_metrics(args.metrics, manager)
            sys.stdout.flush()
            try:
                await stop.wait()
            finally:
                await server.stop()
                if probes is not None:
                    await asyncio.to_thread(probes.close)
    finally:
        await asyncio.to_thread(audit.close)
    sys.stdout.write("streamwarden relay stopped\n")
    sys.stdout.flush()
    return 0
