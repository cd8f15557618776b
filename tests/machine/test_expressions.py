"""The spec's expression evaluator: enough for invariants, nothing more."""

from __future__ import annotations

import pytest

from streamwarden.machine.expressions import Expression, ExpressionError


@pytest.mark.parametrize(("source", "env", "expected"), [
    ("refs >= 0", {"refs": 0}, True),
    ("state not in ('starting', 'running') or refs >= 1", {"state": "idle", "refs": 0}, True),
    ("state not in ('starting', 'running') or refs >= 1", {"state": "running", "refs": 0}, False),
    ("a and b", {"a": 1, "b": 0}, 0),
    ("a and b", {"a": 1, "b": 2}, 2),
    ("a or b", {"a": 0, "b": 0}, 0),
    ("not a", {"a": False}, True),
    ("refs - 1 == -1 + 0", {"refs": 0}, True),
    ("0 < refs <= 4", {"refs": 5}, False),
    ("x == {1, 2}", {"x": frozenset({2, 1})}, True),
    ("x in [1, 2]", {"x": 3}, False),
])
def test_evaluates_the_allowed_subset(source, env, expected):
    assert Expression(source).evaluate(env) == expected


@pytest.mark.parametrize("source", [
    "__import__('os')", "refs.real", "x[0]", "lambda: 1", "(y := 1)", "refs * 2", "f'{refs}'",
])
def test_rejects_anything_else(source):
    with pytest.raises(ExpressionError, match="not allowed"):
        Expression(source)


def test_syntax_errors_and_missing_names():
    with pytest.raises(ExpressionError, match="invalid expression"):
        Expression("refs >=")
    with pytest.raises(ExpressionError, match=r"needs \['refs'\]"):
        Expression("refs > 0").evaluate({})
    assert Expression("a == b").names == {"a", "b"}
