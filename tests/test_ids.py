"""Correlation ids: explicit, bound in contextvars, or generated."""

from __future__ import annotations

import pytest
import structlog

from streamwarden import InvalidInputError
from streamwarden.ids import check_correlation_id, new_id, resolve_correlation_id


def test_explicit_wins_then_bound_then_generated():
    with structlog.contextvars.bound_contextvars(correlation_id="bound-1"):
        assert resolve_correlation_id("explicit-1") == "explicit-1"
        assert resolve_correlation_id(None) == "bound-1"
    generated = resolve_correlation_id(None)
    assert len(generated) == 26 and generated != new_id()


@pytest.mark.parametrize(("value", "match"), [
    ("", "1..128"), ("x" * 129, "1..128"), ("tab\there", "printable ASCII"),
    ("héllo", "printable ASCII"), (42, "must be a string"),
])
def test_bad_correlation_ids(value, match):
    with pytest.raises(InvalidInputError, match=match):
        check_correlation_id(value)


def test_a_bad_bound_id_is_refused_too():
    with structlog.contextvars.bound_contextvars(correlation_id="bad\nid"), \
            pytest.raises(InvalidInputError):
        resolve_correlation_id(None)
