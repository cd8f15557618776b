"""Logging: redaction processor, JSON rendering, correlation ids from contextvars."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from streamwarden._redaction import SecretRedactor
from streamwarden.credentials import Secret
from streamwarden.logging import LOGGER_NAME, make_logger


@pytest.fixture
def records(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    return caplog


def test_redactor_scrubs_secret_values_and_known_strings():
    redactor = SecretRedactor(["hunter2"])
    redactor.register("", "PKKEY")
    event = {"event": "x", "token": Secret("s3"), "nested": {"list": ["a hunter2 b", 3, None]},
             "error": ValueError("PKKEY leaked"), "other": object(), "set": {"hunter2"}}
    cleaned = redactor(None, "info", event)
    text = json.dumps(cleaned, default=str)
    assert "hunter2" not in text and "PKKEY" not in text and "s3" not in text
    assert cleaned["token"] == "<redacted>"
    assert cleaned["nested"] == {"list": ["a <redacted> b", 3, None]}


def test_longer_secret_is_replaced_whole():
    redactor = SecretRedactor(["abc", "abcdef"])
    assert redactor.redact_text("xabcdefx") == "x<redacted>x"


def test_text_format_and_correlation_from_contextvars(records):
    log = make_logger(SecretRedactor(["topsecret"]), log_format="text")
    with structlog.contextvars.bound_contextvars(correlation_id="corr-7"):
        log.info("lease.granted", lease_id="L1", note="topsecret")
    (line,) = [r.getMessage() for r in records.records]
    assert "event='lease.granted'" in line and "correlation_id='corr-7'" in line
    assert "topsecret" not in line


def test_json_format_from_environment(records, monkeypatch):
    monkeypatch.setenv("STREAMWARDEN_LOG_FORMAT", "json")
    log = make_logger(SecretRedactor())
    log.warning("lifecycle.failed", error_type="AuthenticationError")
    payload = json.loads(records.records[-1].getMessage())
    assert payload["event"] == "lifecycle.failed" and payload["level"] == "warning"
    assert payload["timestamp"].endswith("Z")


def test_levels_below_the_threshold_are_not_rendered(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    log = make_logger(SecretRedactor())
    log.debug("lease.granted")
    assert caplog.records == []


def test_exceptions_are_rendered_and_redacted(records):
    log = make_logger(SecretRedactor(["innersecret"]), log_format="json")
    try:
        raise RuntimeError("boom innersecret")
    except RuntimeError:
        log.exception("lease.callback_failed")
    payload = json.loads(records.records[-1].getMessage())
    assert "RuntimeError: boom <redacted>" in payload["exception"]
