"""Prometheus metrics and the probes, against the simulator over real alpaca-py and a real
SQLite audit log: scraped over HTTP and parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import streamwarden as sw
from streamwarden.audit.notes import write_key_pair
from streamwarden.metrics import MAX_CONCURRENT_REQUESTS, ManagerCollector, serve_probes
from streamwarden.simulator import Faults, Simulator
from tests.runtime.conftest import BOUND, account, sim_settings
from tests.waiting import wait_until

README = Path(__file__).resolve().parents[2] / "README.md"


def fast_settings(sim: Simulator, **overrides: object) -> sw.Settings:
    values: dict[str, object] = {"reconnect_backoff_initial": 0.05,
                                 "reconnect_backoff_max": 0.2, "reconnect_grace": 1.5}
    values.update(overrides)
    return sim_settings(sim, **values)


def get(url: str) -> tuple[int, str]:
    """Status and body of ``GET url`` (an HTTP error status is an answer, not a failure)."""
    try:
        with urllib.request.urlopen(url, timeout=BOUND * 2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(url: str) -> dict[str, Any]:
    """``/metrics`` parsed: family name -> family."""
    status, body = get(f"{url}/metrics")
    assert status == 200, body
    return {family.name: family for family in text_string_to_metric_families(body)}


def value(families: dict[str, Any], sample_name: str, **labels: str) -> float:
    """The one sample of ``sample_name`` whose labels include ``labels``."""
    family_name = re.sub(r"_(total|bucket|count|sum)$", "", sample_name)
    family = families.get(family_name) or families[sample_name]
    found = [s.value for s in family.samples
             if s.name == sample_name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (sample_name, labels, family.samples)
    return float(found[0])


def sample_names(families: dict[str, Any]) -> set[str]:
    """Every metric's exposed name (a counter's with ``_total``, a histogram's family name)."""
    return {f"{name}_total" if family.type == "counter" else name
            for name, family in families.items()}


def publish(sim: Simulator, symbol: str, price: float) -> None:
    """Send one quote of ``symbol``, retrying until a connection carries it."""
    assert wait_until(lambda: sim.publish_quote(symbol, bid_price=price,
                                                ask_price=price + 0.01) == 1, BOUND)


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[sw.AuditLog]:
    key = tmp_path / "checkpoint-key"
    write_key_pair(key, "test.example/metrics")
    settings = sw.Settings(checkpoint_every=1, checkpoint_interval=3600)
    log = sw.AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}", settings=settings,
                           checkpoint_dir=tmp_path / "checkpoints", checkpoint_key=key,
                           lock_timeout=0.3)
    yield log
    log.close()


def test_metrics_scraped_over_http_name_what_happened(sim, audit):
    creds = account(1)
    failures: list[object] = []

    def failing(quote: object) -> None:
        failures.append(quote)
        raise ValueError("a consumer bug")

    with sw.ConnectionManager(audit=audit, settings=fast_settings(sim)) as manager, \
            serve_probes(manager) as probes:
        assert probes.host == "127.0.0.1" and probes.url == f"http://127.0.0.1:{probes.port}"
        raising = manager.market_data(creds, symbols=["AAPL"], on_quote=failing)
        reading = manager.market_data(creds, symbols=["MSFT"])
        for count, price in enumerate((10.0, 10.5), start=1):  # one by one: no conflation
            publish(sim, "AAPL", price)
            assert wait_until(lambda count=count: len(failures) == count)
        publish(sim, "MSFT", 20.0)
        assert next(reading.quotes(timeout=BOUND)).symbol == "MSFT"
        assert sim.drop_connections() == 1
        assert wait_until(lambda: manager.health().lifecycles[0].reconnects == 1
                          and manager.health().lifecycles[0].state == "running", BOUND)
        publish(sim, "AAPL", 11.0)
        assert wait_until(lambda: len(failures) == 3)
        sim.publish_trade("MSFT", price=20.0)
        assert wait_until(lambda: manager.health().lifecycles[0].messages == 5)
        assert wait_until(lambda: audit.checkpoint_written_at is not None)
        records = len(audit.query())
        families = scrape(probes.url)

        (lifecycle,) = manager.health().lifecycles
        stream = {"account": lifecycle.fingerprint, "kind": "market_data", "feed": "iex"}
        assert value(families, "streamwarden_leases", **stream) == 2
        assert value(families, "streamwarden_lifecycle_state", state="running", **stream) == 1
        assert value(families, "streamwarden_lifecycle_state", state="starting", **stream) == 0
        assert value(families, "streamwarden_upstream_connected", **stream) == 1
        assert value(families, "streamwarden_reconnects_total", **stream) == 1
        assert value(families, "streamwarden_messages_total", channel="quotes", **stream) == 4
        assert value(families, "streamwarden_messages_total", channel="trades", **stream) == 1
        assert value(families, "streamwarden_transitions_total", event="acquire",
                     **stream) == 2
        assert value(families, "streamwarden_transitions_total", event="connected",
                     **stream) == 2
        assert value(families, "streamwarden_transitions_total", event="connection_lost",
                     **stream) == 1
        assert value(families, "streamwarden_callback_errors_total") == 3
        assert value(families, "streamwarden_callback_duration_seconds_count") == 3
        assert value(families, "streamwarden_audit_append_duration_seconds_count") == records
        assert value(families, "streamwarden_audit_append_duration_seconds_sum") > 0
        assert value(families, "streamwarden_audit_writable") == 1
        assert 0 <= value(families, "streamwarden_audit_checkpoint_age_seconds") < 60
        # MSFT's quote and trade wait in the reading lease's queue (it took one quote).
        assert value(families, "streamwarden_queued_messages", **stream) == 1
        assert value(families, "streamwarden_delivery_lag_seconds", **stream) > 0
        assert 0 <= value(families, "streamwarden_last_message_age_seconds",
                          channel="trades", **stream) < 60
        for name, family in families.items():
            assert name.startswith("streamwarden_"), name
            if family.type == "histogram" or re.search(r"duration|_age|_lag", name):
                assert name.endswith("_seconds"), name
            for sample in family.samples:
                assert "symbol" not in sample.labels, sample
                if family.type == "counter":
                    assert sample.name.endswith("_total"), sample
                assert creds.api_key_id not in str(sample.labels)
        raising.release()
        reading.release()


def test_errors_and_drops_are_counted_by_cause_and_type(sim):
    creds = account(2)
    with sw.ConnectionManager(settings=fast_settings(sim, lease_queue_size=2)) as manager:
        registry = CollectorRegistry()
        registry.register(ManagerCollector(manager))
        with manager.market_data(creds, symbols=["AAPL"]) as lease:
            for price in (1.0, 2.0, 3.0):  # conflated: the lease reads none
                publish(sim, "AAPL", price)
            assert wait_until(lambda: manager.health().lifecycles[0].messages == 3)
            fingerprint = lease.key.fingerprint
        sim.set_faults(Faults(auth_failure=True))
        with pytest.raises(sw.AuthenticationError):
            manager.market_data(creds, symbols=["AAPL"])
        families = {f.name: f for f in text_string_to_metric_families(
            generate_latest(registry).decode())}
    stream = {"account": fingerprint, "kind": "market_data", "feed": "iex"}
    assert value(families, "streamwarden_dropped_messages_total", **stream) == 2
    assert value(families, "streamwarden_errors_total", error="AuthenticationError",
                 **stream) >= 1
    assert value(families, "streamwarden_transitions_total", event="start_failed",
                 **stream) == 1
    assert value(families, "streamwarden_upstream_connected", **stream) == 0
    assert value(families, "streamwarden_leases", **stream) == 0


def test_connect_failures_are_counted_by_cause(sim):
    creds = account(3)
    with sw.ConnectionManager(settings=fast_settings(sim)) as manager:
        collector = ManagerCollector(manager)
        with manager.market_data(creds, symbols=["AAPL"]) as lease:
            sim.set_faults(Faults(connection_limit=True))
            assert sim.drop_connections() == 1
            assert wait_until(lambda: _count(collector, "streamwarden_connect_failures",
                                             cause="connection_limit") >= 1, BOUND)
            sim.set_faults(Faults())
            assert wait_until(lambda: manager.health().lifecycles[0].state == "running", BOUND)
            assert lease.is_live


def _count(collector: ManagerCollector, family_name: str, **labels: str) -> float:
    for family in collector.collect():
        if family.name == family_name:
            return sum(s.value for s in family.samples if labels.items() <= s.labels.items())
    raise AssertionError(family_name)


def test_readiness_follows_the_upstream(sim):
    creds = account(4)
    settings = fast_settings(sim, reconnect_grace=0.5)
    with sw.ConnectionManager(settings=settings) as manager, \
            serve_probes(manager, timeout=1.0) as probes:
        assert get(f"{probes.url}/readyz") == (200, "ready\n")  # idle: nothing to connect
        lease = manager.market_data(creds, symbols=["AAPL"])
        assert get(f"{probes.url}/readyz") == (200, "ready\n")
        sim.set_faults(Faults(auth_failure=True))
        assert sim.drop_connections() == 1
        assert wait_until(lambda: get(f"{probes.url}/readyz")[0] == 503, BOUND)
        status, body = get(f"{probes.url}/readyz")
        assert body.startswith("not ready: upstream down: market_data/iex of account ")
        assert get(f"{probes.url}/healthz") == (200, "ok\n")  # down upstream: still alive
        assert wait_until(lambda: lease.status is not sw.LeaseStatus.LIVE, BOUND)
        sim.set_faults(Faults())
        with manager.market_data(creds, symbols=["AAPL"]):
            assert get(f"{probes.url}/readyz") == (200, "ready\n")
            sim.stop()
            assert wait_until(lambda: get(f"{probes.url}/readyz")[0] == 503, BOUND)
        # Released while reconnecting: the lifecycle closes, and an idle stream counts as up.
        assert wait_until(lambda: get(f"{probes.url}/readyz") == (200, "ready\n"), BOUND)
        assert get(f"{probes.url}/nothing")[0] == 404
    status, body = _closed_probe(manager)
    assert status == 503 and body.startswith("not ready: manager closed")


def _closed_probe(manager: sw.ConnectionManager) -> tuple[int, str]:
    with serve_probes(manager, timeout=1.0) as probes:
        assert get(f"{probes.url}/healthz")[0] == 503
        return get(f"{probes.url}/readyz")


def test_readiness_fails_while_the_audit_database_refuses_writes(sim, tmp_path):
    creds = account(5)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with sw.AuditLog.open(url, lock_timeout=0.3) as log, \
            sw.ConnectionManager(audit=log, settings=fast_settings(sim)) as manager, \
            serve_probes(manager) as probes:
        with manager.market_data(creds, symbols=["AAPL"]):
            assert get(f"{probes.url}/readyz") == (200, "ready\n")
        # Another process's writer holds the database's write lock: every append times out.
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(sw.AuditError):
                manager.market_data(creds, symbols=["AAPL"])
            assert get(f"{probes.url}/readyz") == (503, "not ready: audit append failing\n")
            assert value(scrape(probes.url), "streamwarden_audit_writable") == 0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        with manager.market_data(creds, symbols=["AAPL"]):
            assert get(f"{probes.url}/readyz") == (200, "ready\n")


class WedgingSink(sw.InMemoryAuditSink):
    """An audit sink that blocks inside ``append`` while ``wedged`` is set.

    A test double, because nothing streamwarden ships blocks its engine loop: a sink declared
    ``nonblocking`` is appended to on that loop, so one that blocks anyway wedges it for real.
    """

    nonblocking = True

    def __init__(self) -> None:
        super().__init__()
        self.wedged = threading.Event()
        self.entered = threading.Event()
        self.unwedge = threading.Event()

    def append(self, record: sw.AuditRecord) -> sw.AuditRecord:
        if self.wedged.is_set():
            self.entered.set()
            self.unwedge.wait(BOUND * 2)
        return super().append(record)


def test_liveness_fails_while_the_engine_is_wedged_and_busy_answers_are_bounded(sim):
    sink = WedgingSink()
    with sw.ConnectionManager(audit=sink, settings=fast_settings(sim)) as manager, \
            serve_probes(manager, timeout=1.5) as probes, ThreadPoolExecutor(12) as pool:
        assert get(f"{probes.url}/healthz") == (200, "ok\n")
        sink.wedged.set()
        acquiring = pool.submit(manager.market_data, account(6), symbols=["AAPL"])
        try:
            assert sink.entered.wait(BOUND)
            assert get(f"{probes.url}/healthz") == (
                503, "engine not answering within 1.5s (or manager closed)\n")
            assert get(f"{probes.url}/readyz")[0] == 503
            assert get(f"{probes.url}/metrics")[0] == 500
            # Each waits 1.5 s for the wedged engine: enough for all of them to overlap.
            waiting = [pool.submit(get, f"{probes.url}/healthz")
                       for _ in range(MAX_CONCURRENT_REQUESTS + 2)]
            answers = [future.result() for future in waiting]
            assert (503, "busy\n") in answers
        finally:
            sink.wedged.clear()
            sink.unwedge.set()
        acquiring.result(BOUND).release()
        assert get(f"{probes.url}/healthz") == (200, "ok\n")


def test_the_collector_sums_managers_on_the_users_registry_only(sim):
    before = set(REGISTRY._names_to_collectors)  # the default registry, untouched
    sinks = [sw.InMemoryAuditSink(), sw.InMemoryAuditSink()]

    async def main() -> tuple[dict[str, Any], list[str]]:
        async with sw.AsyncConnectionManager(audit=sinks[0],
                                             settings=fast_settings(sim)) as amanager:
            with sw.ConnectionManager(audit=sinks[1], settings=fast_settings(sim)) as manager:
                registry = CollectorRegistry()
                registry.register(ManagerCollector(manager, amanager))
                async with amanager.market_data(account(7), symbols=["AAPL"]) as alease:
                    lease = manager.market_data(account(8), symbols=["MSFT"])
                    text = await asyncio.to_thread(generate_latest, registry)
                    lease.release()
                    return ({f.name: f for f in text_string_to_metric_families(text.decode())},
                            [alease.key.fingerprint, lease.key.fingerprint])

    families, fingerprints = asyncio.run(main())
    for fingerprint in fingerprints:
        assert value(families, "streamwarden_leases", account=fingerprint) == 1
    appended = len(sinks[0].records()) + len(sinks[1].records())
    assert value(families, "streamwarden_audit_append_duration_seconds_count") < appended
    assert value(families, "streamwarden_audit_append_duration_seconds_count") >= 4
    assert set(REGISTRY._names_to_collectors) == before
    assert b"streamwarden_" not in generate_latest(REGISTRY)


def test_the_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (example,) = [block for block in blocks if "ManagerCollector" in block]
    namespace: dict[str, Any] = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert namespace["ready"] == b"ready\n"
    families = {f.name: f for f in text_string_to_metric_families(namespace["text"])}
    assert value(families, "streamwarden_messages_total", channel="quotes") == 1
    assert value(families, "streamwarden_leases") == 1


def test_bad_arguments_are_refused():
    with pytest.raises(sw.InvalidInputError, match="at least one manager"):
        ManagerCollector()
    with pytest.raises(sw.InvalidInputError, match="not a connection manager"):
        ManagerCollector(object())  # type: ignore[arg-type]
    with pytest.raises(sw.InvalidInputError, match="not a connection manager"):
        serve_probes(object(), registry=CollectorRegistry())  # type: ignore[arg-type]
    with sw.ConnectionManager(transport_factory=lambda *_: None) as manager:  # type: ignore
        with pytest.raises(sw.InvalidInputError, match="timeout"):
            ManagerCollector(manager, timeout=0)
        for port in (-1, 70000, "80", True):
            with pytest.raises(sw.InvalidInputError, match="port"):
                serve_probes(manager, port=port)  # type: ignore[arg-type]
        probes = serve_probes(manager, registry=CollectorRegistry())  # serves that registry
        assert get(f"{probes.url}/metrics") == (200, "")
        probes.close()
        probes.close()  # idempotent
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{probes.url}/healthz", timeout=BOUND)


def test_import_streamwarden_does_not_import_prometheus_client():
    code = ("import json, sys, streamwarden\nstreamwarden.ConnectionManager\n"
            "print(json.dumps('prometheus_client' in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, cwd=Path(__file__).resolve().parents[2])
    assert json.loads(done.stdout) is False


def test_readme_and_module_docs_list_exactly_the_metrics_collected(sim):
    with sw.ConnectionManager(settings=fast_settings(sim)) as manager:
        registry = CollectorRegistry()
        registry.register(ManagerCollector(manager))
        families = {f.name: f for f in text_string_to_metric_families(
            generate_latest(registry).decode())}
    collected = sample_names(families)
    readme = README.read_text()
    section = readme.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`(streamwarden_\w+)`", section)) == collected
    import streamwarden.metrics as module  # noqa: PLC0415
    assert set(re.findall(r"``(streamwarden_\w+)``", module.__doc__ or "")) == collected
