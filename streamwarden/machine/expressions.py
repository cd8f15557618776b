"""A small, safe evaluator for the spec's invariant and environment expressions.

Expressions are Python syntax restricted to: names (looked up in the environment), constants,
tuple/list/set literals, ``not``/``and``/``or``, comparisons (``== != < <= > >= in not in``),
``+`` and ``-``. Anything else (calls, attributes, subscripts, lambdas) is rejected when the
expression is compiled, so a spec file cannot run code.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamwarden.errors import StreamwardenError


class ExpressionError(StreamwardenError):
    """An expression in the spec is malformed, uses forbidden syntax or an unknown name."""


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
}
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.Compare,
    ast.BinOp,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.Set,
    *_COMPARE,
    *_BINARY,
)


@dataclass(frozen=True)
class Expression:
    """A compiled expression. Thread-safe: evaluation does not mutate it.

    Raises (on construction):
        ExpressionError: on a syntax error or any construct outside the allowed subset.
    """

    source: str
    names: frozenset[str] = field(init=False)
    _tree: ast.Expression = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            tree = ast.parse(self.source, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid expression {self.source!r}: {exc.msg}") from None
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED):
                raise ExpressionError(
                    f"{type(node).__name__} is not allowed in spec expressions: {self.source!r}"
                )
        names = frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name))
        object.__setattr__(self, "_tree", tree)
        object.__setattr__(self, "names", names)

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """The value of the expression with names taken from ``env``.

        Raises:
            ExpressionError: if a name is missing from ``env``.
        """
        missing = self.names - env.keys()
        if missing:
            raise ExpressionError(f"{self.source!r} needs {sorted(missing)}")
        return _eval(self._tree.body, env)


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:  # noqa: PLR0911 - one branch per node
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_eval(item, env) for item in node.elts)
    if isinstance(node, ast.Set):
        return frozenset(_eval(item, env) for item in node.elts)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        return (not value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.BoolOp):
        return _eval_bool(node, env)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    assert isinstance(node, ast.Compare)  # the allowlist leaves nothing else
    return _eval_compare(node, env)


def _eval_bool(node: ast.BoolOp, env: Mapping[str, Any]) -> Any:
    if isinstance(node.op, ast.And):
        result: Any = True
        for value in node.values:
            result = _eval(value, env)
            if not result:
                return result
        return result
    result = False
    for value in node.values:
        result = _eval(value, env)
        if result:
            return result
    return result


def _eval_compare(node: ast.Compare, env: Mapping[str, Any]) -> bool:
    left = _eval(node.left, env)
    for op, comparator in zip(node.ops, node.comparators, strict=True):
        right = _eval(comparator, env)
        if not _COMPARE[type(op)](left, right):
            return False
        left = right
    return True
