"""Shared fixtures: credentials with a recognisable secret, fast settings, managers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from streamwarden import ConnectionManager, Credentials, InMemoryAuditSink, Settings
from streamwarden.machine.memory_transport import InMemoryTransportFactory

hypothesis_settings.register_profile("ci", deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

CANARY_KEY_ID = "PKCANARYKEYID0000001"
CANARY_SECRET = "sk-CANARY-9f8e7d6c5b4a39281706-SECRET"


@pytest.fixture
def creds() -> Credentials:
    return Credentials(CANARY_KEY_ID, CANARY_SECRET, paper=True)


@pytest.fixture
def fast_settings() -> Settings:
    return Settings(start_timeout=2.0, stop_timeout=0.5, drain_grace=0.0, debug=True)


@pytest.fixture
def factory() -> InMemoryTransportFactory:
    return InMemoryTransportFactory()


@pytest.fixture
def sink() -> InMemoryAuditSink:
    return InMemoryAuditSink()


@pytest.fixture
def manager(
    factory: InMemoryTransportFactory, sink: InMemoryAuditSink, fast_settings: Settings
) -> Iterator[ConnectionManager]:
    manager = ConnectionManager(transport_factory=factory, audit=sink, settings=fast_settings)
    yield manager
    manager.close()
    assert manager.check_invariants() == []
