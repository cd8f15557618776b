"""Prometheus metrics of connection managers, and the ``/metrics``, ``/healthz`` and ``/readyz``
probes. Needs the ``metrics`` extra (``pip install 'streamwarden[metrics]'``).

:class:`ManagerCollector` is a ``prometheus_client`` custom collector over one or more managers
(``ConnectionManager`` or ``AsyncConnectionManager``): register it on a registry of your own,
``registry.register(ManagerCollector(manager))``; nothing here touches prometheus_client's
global registry. Each scrape reads the managers' health and cumulative counts on their engine
loops (bounded by ``timeout``); no metric has a symbol label, and accounts are named only by
fingerprint (an HMAC, never a key id). The metrics, labelled by ``account`` (fingerprint),
``kind`` and ``feed`` (empty when the kind has none) unless said otherwise, summed over the
managers:

================================================  =========  =================================
``streamwarden_lifecycle_state``                  gauge      live lifecycles of the stream in
                                                             each spec ``state`` (0 or 1)
``streamwarden_upstream_connected``               gauge      1 while the stream's upstream is
                                                             connected, 0 since it was lost or
                                                             failed (absent while idle)
``streamwarden_leases``                           gauge      live leases
``streamwarden_queued_messages``                  gauge      messages waiting in the leases'
                                                             queues
``streamwarden_delivery_lag_seconds``             gauge      age of the oldest undelivered
                                                             message (0: none waiting)
``streamwarden_last_message_age_seconds``         gauge      seconds since the last message,
                                                             by ``channel``
``streamwarden_messages_total``                   counter    messages received, by ``channel``
``streamwarden_transitions_total``                counter    spec transitions, by ``event``
``streamwarden_reconnects_total``                 counter    reconnects (a drop or a stale
                                                             stream)
``streamwarden_connect_failures_total``           counter    failed connection attempts, by
                                                             ``cause`` (``auth``,
                                                             ``connection_limit``, ...)
``streamwarden_errors_total``                     counter    errors audited, by ``error`` type
``streamwarden_dropped_messages_total``           counter    messages dropped by the leases'
                                                             bounded queues
``streamwarden_malformed_messages_total``         counter    messages that could not be read
``streamwarden_callback_errors_total``            counter    lease callbacks that raised (no
                                                             labels)
``streamwarden_callback_duration_seconds``        histogram  how long lease callbacks ran (no
                                                             labels)
``streamwarden_audit_append_duration_seconds``    histogram  how long each audit append took
                                                             (no labels)
``streamwarden_audit_writable``                   gauge      0 when the latest audit append
                                                             failed for want of the sink
``streamwarden_audit_checkpoint_age_seconds``     gauge      age of the newest signed
                                                             checkpoint (an ``AuditLog`` with
                                                             checkpoints, once it wrote one)
``streamwarden_final_records_lost_total``         counter    final lifecycle records lost to
                                                             an audit outage
``streamwarden_abandoned_transports_total``       counter    transports abandoned after a stop
                                                             timeout
================================================  =========  =================================

:func:`serve_probes` serves them over HTTP with the two probes, for the relay or any process.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from streamwarden.audit.log import AuditLog
from streamwarden.errors import InvalidInputError, WaitTimeoutError
from streamwarden.runtime._stats import HistogramSnapshot, RuntimeStats, StreamTotals
from streamwarden.runtime.manager import AsyncConnectionManager, ConnectionManager
from streamwarden.validation import check_seconds

Manager = ConnectionManager | AsyncConnectionManager

#: Seconds a scrape or a probe waits for a manager's engine loop by default.
DEFAULT_TIMEOUT = 2.0
#: Requests the probe server handles at once; more are answered 503 at once.
MAX_CONCURRENT_REQUESTS = 8
#: Seconds the probe server waits for a request's line and headers.
REQUEST_TIMEOUT = 5.0

_STREAM = ("account", "kind", "feed")
_Labels = tuple[str, ...]


def _stream_labels(fingerprint: str, kind: str, feed: str | None) -> _Labels:
    return fingerprint, kind, feed or ""


def _histogram(name: str, documentation: str,
               snapshot: HistogramSnapshot) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip([*map(repr, snapshot.bounds), "+Inf"], snapshot.counts,
                            strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    return HistogramMetricFamily(name, documentation, buckets=buckets,
                                 sum_value=snapshot.total)


@dataclass
class _Totals:
    """The figures of every manager, summed by label values."""

    states: dict[_Labels, float] = field(default_factory=lambda: defaultdict(float))
    connected: dict[_Labels, float] = field(default_factory=lambda: defaultdict(float))
    leases: dict[_Labels, float] = field(default_factory=lambda: defaultdict(float))
    queued: dict[_Labels, float] = field(default_factory=lambda: defaultdict(float))
    lag: dict[_Labels, float] = field(default_factory=lambda: defaultdict(float))
    ages: dict[_Labels, float] = field(default_factory=dict)
    counters: dict[str, dict[_Labels, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    callback_durations: list[HistogramSnapshot] = field(default_factory=list)
    append_durations: list[HistogramSnapshot] = field(default_factory=list)
    callback_errors: float = 0.0
    records_lost: float = 0.0
    abandoned: float = 0.0
    writable: float = 1.0
    checkpoint_ages: list[float] = field(default_factory=list)

    def add(self, stats: RuntimeStats) -> None:
        for stream in stats.streams:
            labels = _stream_labels(stream.fingerprint, stream.kind, stream.feed)
            for state in stats.states:
                self.states[(*labels, state)] += 0
            self.leases[labels] += 0
            self.queued[labels] += 0
            self.lag[labels] += 0
            self._add_counts(labels, stream)
        for lifecycle in stats.health.lifecycles:
            labels = _stream_labels(lifecycle.fingerprint, lifecycle.kind, lifecycle.feed)
            self.states[(*labels, lifecycle.state)] += 1
            self.leases[labels] += len(lifecycle.leases)
            self.queued[labels] += sum(lease.queue_depth for lease in lifecycle.leases)
            ages = [lease.oldest_undelivered_age for lease in lifecycle.leases
                    if lease.oldest_undelivered_age is not None]
            self.lag[labels] = max([self.lag[labels], *ages])
            for channel, age in lifecycle.message_ages.items():
                if age is not None:
                    key = (*labels, channel)
                    self.ages[key] = min(age, self.ages.get(key, age))
        self.callback_durations.append(stats.callback_durations)
        self.append_durations.append(stats.audit_append_durations)
        self.callback_errors += stats.callback_errors
        self.records_lost += stats.health.final_records_lost
        self.abandoned += stats.health.abandoned_transports
        if stats.audit_append_failed:
            self.writable = 0.0

    def _add_counts(self, labels: _Labels, stream: StreamTotals) -> None:
        counters = self.counters
        for name, by in (("messages", stream.messages), ("transitions", stream.transitions),
                         ("connect_failures", stream.connect_failures),
                         ("errors", stream.errors)):
            for value, count in by.items():
                counters[name][(*labels, value)] += count
        counters["reconnects"][labels] += stream.reconnects
        counters["dropped_messages"][labels] += stream.dropped
        counters["malformed_messages"][labels] += stream.malformed
        if stream.connected is not None:
            self.connected[labels] += 1 if stream.connected else 0


#: Counters by stream: (name without ``_total``, help, extra label).
_STREAM_COUNTERS = (
    ("messages", "Messages received", "channel"),
    ("transitions", "Lifecycle spec transitions taken", "event"),
    ("reconnects", "Reconnects after a drop or a stale stream", None),
    ("connect_failures", "Failed connection attempts", "cause"),
    ("errors", "Errors recorded in the audit trail", "error"),
    ("dropped_messages", "Messages dropped by the leases' bounded queues", None),
    ("malformed_messages", "Messages dropped because they could not be read", None),
)


def _gauge(name: str, documentation: str, labels: Iterable[str],
           values: dict[_Labels, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family


class ManagerCollector:
    """A ``prometheus_client`` collector over one or more connection managers.

    Args:
        managers: ``ConnectionManager`` or ``AsyncConnectionManager`` instances (at least one);
            their figures are summed.
        timeout: seconds each scrape waits for each manager's engine loop.

    Raises:
        InvalidInputError: no manager, something that is not one, or a bad timeout.

    Thread-safety: :meth:`collect` may be called from any thread but a manager's own engine
    thread; it blocks up to ``timeout`` per manager (serve it off an event loop you care about).
    A scrape of a manager whose engine does not answer in time raises ``WaitTimeoutError``
    (prometheus_client then fails that scrape).
    """

    def __init__(self, *managers: Manager, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not managers:
            raise InvalidInputError("ManagerCollector needs at least one manager",
                                    operation="metrics")
        for manager in managers:
            if not isinstance(manager, ConnectionManager | AsyncConnectionManager):
                raise InvalidInputError(f"not a connection manager: {type(manager).__name__}",
                                        operation="metrics")
        self._managers = managers
        self._timeout = check_seconds("timeout", timeout, allow_zero=False)

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (registries check names with it)."""
        return self._families(_Totals())

    def collect(self) -> Iterator[Metric]:
        """Every metric family, read from the managers now.

        Raises:
            WaitTimeoutError: a manager's engine did not answer within ``timeout``.
        """
        totals = _Totals()
        for manager in self._managers:
            totals.add(manager._runtime_stats(self._timeout))
            age = _checkpoint_age(manager)
            if age is not None:
                totals.checkpoint_ages.append(age)
        return self._families(totals)

    def _families(self, totals: _Totals) -> Iterator[Metric]:
        yield _gauge("streamwarden_lifecycle_state",
                     "Live lifecycles of the stream in each spec state", (*_STREAM, "state"),
                     totals.states)
        yield _gauge("streamwarden_upstream_connected",
                     "1 while the stream's upstream is connected, 0 since it was lost",
                     _STREAM, totals.connected)
        yield _gauge("streamwarden_leases", "Live leases", _STREAM, totals.leases)
        yield _gauge("streamwarden_queued_messages", "Messages waiting in the leases' queues",
                     _STREAM, totals.queued)
        yield _gauge("streamwarden_delivery_lag_seconds",
                     "Age of the oldest undelivered message", _STREAM, totals.lag)
        yield _gauge("streamwarden_last_message_age_seconds",
                     "Seconds since the last message of the channel", (*_STREAM, "channel"),
                     totals.ages)
        for name, documentation, extra in _STREAM_COUNTERS:
            labels = [*_STREAM, extra] if extra else list(_STREAM)
            family = CounterMetricFamily(f"streamwarden_{name}", documentation, labels=labels)
            for label_values, value in sorted(totals.counters[name].items()):
                family.add_metric(list(label_values), value)
            yield family
        yield CounterMetricFamily("streamwarden_callback_errors",
                                  "Lease callbacks that raised", value=totals.callback_errors)
        yield _histogram("streamwarden_callback_duration_seconds",
                         "How long lease callbacks ran",
                         HistogramSnapshot.merge(totals.callback_durations))
        yield _histogram("streamwarden_audit_append_duration_seconds",
                         "How long each audit append took",
                         HistogramSnapshot.merge(totals.append_durations))
        yield GaugeMetricFamily("streamwarden_audit_writable",
                                "0 when the latest audit append failed for want of the sink",
                                value=totals.writable)
        checkpoint = GaugeMetricFamily("streamwarden_audit_checkpoint_age_seconds",
                                       "Age of the newest signed audit checkpoint")
        if totals.checkpoint_ages:
            checkpoint.add_metric([], max(totals.checkpoint_ages))
        yield checkpoint
        yield CounterMetricFamily("streamwarden_final_records_lost",
                                  "Final lifecycle records lost to an audit outage",
                                  value=totals.records_lost)
        yield CounterMetricFamily("streamwarden_abandoned_transports",
                                  "Transports abandoned after a stop timeout",
                                  value=totals.abandoned)


def _checkpoint_age(manager: Manager) -> float | None:
    sink = manager.audit
    written_at = sink.checkpoint_written_at if isinstance(sink, AuditLog) else None
    return None if written_at is None else max(0.0, time.time() - written_at)


# Probes.


@dataclass(frozen=True)
class ProbeResult:
    """A probe's answer: whether it passed, and the short text body saying why not."""

    ok: bool
    body: str


def liveness(manager: Manager, timeout: float = DEFAULT_TIMEOUT) -> ProbeResult:
    """``/healthz``: the manager's engine loop runs a no-op within ``timeout`` seconds (the
    process is not wedged). Fails once the manager is closed.

    Thread-safety: any thread but the manager's engine thread; blocks up to ``timeout``.
    """
    if manager._engine_answers(timeout):
        return ProbeResult(True, "ok")
    return ProbeResult(False, f"engine not answering within {timeout}s (or manager closed)")


def readiness(manager: Manager, timeout: float = DEFAULT_TIMEOUT) -> ProbeResult:
    """``/readyz``: the manager is open, its engine answers within ``timeout`` seconds, no
    stream's upstream is down (lost, reconnecting, or failed since its latest ``connected``;
    an idle stream counts as up) and the latest audit append did not fail for want of the
    sink.

    Thread-safety: any thread but the manager's engine thread; blocks up to ``timeout``.
    """
    try:
        stats = manager._runtime_stats(timeout)
    except WaitTimeoutError:
        return ProbeResult(False, f"not ready: engine not answering within {timeout}s")
    problems = [f"upstream down: {s.kind}{'/' + s.feed if s.feed else ''} of account "
                f"{s.fingerprint}" for s in stats.streams if s.connected is False]
    if stats.health.closed:
        problems.insert(0, "manager closed")
    if stats.audit_append_failed:
        problems.append("audit append failing")
    if problems:
        return ProbeResult(False, "not ready: " + "; ".join(problems))
    return ProbeResult(True, "ready")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    routes: dict[str, Callable[[], tuple[int, str, bytes]]]
    slots: threading.BoundedSemaphore


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._answer(404, "text/plain; charset=utf-8", b"not found: /metrics, /healthz, "
                                                            b"/readyz\n")
            return
        if not self.server.slots.acquire(blocking=False):
            self._answer(503, "text/plain; charset=utf-8", b"busy\n")
            return
        try:
            status, content_type, body = route()
        finally:
            self.server.slots.release()
        self._answer(status, content_type, body)

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: probes are polled every few seconds."""


def _probe_route(probe: Callable[[], ProbeResult]) -> Callable[[], tuple[int, str, bytes]]:
    def route() -> tuple[int, str, bytes]:
        result = probe()
        return (200 if result.ok else 503, "text/plain; charset=utf-8",
                (result.body + "\n").encode())
    return route


class ProbeServer:
    """An HTTP server on its own daemon thread answering ``GET``:

    * ``/metrics``: the registry in Prometheus' text format (200; 500 if a collector failed,
      e.g. an engine that did not answer);
    * ``/healthz``: 200 ``ok``, or 503 and why (:func:`liveness`);
    * ``/readyz``: 200 ``ready``, or 503 ``not ready: ...`` naming each problem
      (:func:`readiness`);
    * anything else: 404. More than :data:`MAX_CONCURRENT_REQUESTS` at once: 503 ``busy``.

    Build it with :func:`serve_probes`. A context manager; :meth:`close` is idempotent.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="streamwarden-probes", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        """The address it listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when 0 was asked)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port (requests in flight finish on their own)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def serve_probes(manager: Manager, host: str = "127.0.0.1", port: int = 0, *,
                 registry: CollectorRegistry | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> ProbeServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` for ``manager`` on ``host:port``
    (loopback by default; port 0 picks a free one: read :attr:`ProbeServer.port`).

    Args:
        registry: what ``/metrics`` serves (default: a new registry holding a
            :class:`ManagerCollector` of ``manager``; never the global one).
        timeout: seconds a probe or scrape waits for the manager's engine.

    Raises:
        InvalidInputError: a bad port or timeout, or not a manager.
        OSError: the address cannot be bound (in use, not local).
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise InvalidInputError(f"port must be an integer 0..65535; got {port!r}",
                                operation="serve_probes")
    check_seconds("timeout", timeout, allow_zero=False)
    if registry is None:
        registry = CollectorRegistry(auto_describe=True)
        registry.register(ManagerCollector(manager, timeout=timeout))
    elif not isinstance(manager, ConnectionManager | AsyncConnectionManager):
        raise InvalidInputError(f"not a connection manager: {type(manager).__name__}",
                                operation="serve_probes")
    scraped = registry

    def metrics() -> tuple[int, str, bytes]:
        try:
            return 200, CONTENT_TYPE_LATEST, generate_latest(scraped)
        except WaitTimeoutError as exc:
            return 500, "text/plain; charset=utf-8", f"scrape failed: {exc.message}\n".encode()

    server = _Server((host, port), _Handler)
    server.routes = {
        "/metrics": metrics,
        "/healthz": _probe_route(lambda: liveness(manager, timeout)),
        "/readyz": _probe_route(lambda: readiness(manager, timeout)),
    }
    server.slots = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)
    return ProbeServer(server)
