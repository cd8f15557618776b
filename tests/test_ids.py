"""Correlation ids: explicit, bound in contextvars, or generated."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta

import pytest
import structlog
import ulid

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


def test_new_ids_are_ulids_of_now_strictly_increasing():
    before = datetime.now(UTC)
    ids = [new_id() for _ in range(20_000)]  # many fall in the same millisecond
    after = datetime.now(UTC)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for value in ids[:: 997]:
        parsed = ulid.ULID.from_str(value)
        assert str(parsed) == value  # canonical: 26 Crockford digits, upper case
        assert before - timedelta(milliseconds=1) <= parsed.datetime <= after


def test_new_ids_from_many_threads_are_unique():
    results: list[list[str]] = [[] for _ in range(8)]

    def make(out: list[str]) -> None:
        out.extend(new_id() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    every = [value for out in results for value in out]
    assert len(every) == 40_000 and len(set(every)) == 40_000
    assert all(out == sorted(out) for out in results)


def test_a_forked_child_makes_other_ids():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then exit without running pytest's teardown
        os.close(read)
        os.write(write, "".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    parents = {new_id() for _ in range(50)}
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    children = {text[i:i + 26] for i in range(0, len(text), 26)}
    assert len(children) == 50 and not children & parents
