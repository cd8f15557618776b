"""Exhaustive bounded model check of the lifecycle spec.

Breadth-first search over every reachable configuration (state, refs, live leases) of the
machine built from the spec files, up to ``max_leases`` live leases, sending every event with
every valuation of the environment inputs (``reusable``) in every configuration. The machine is
the real one (python-statemachine running ``lifecycle.yaml``); each configuration is reached by
replaying its shortest event path on a fresh instance, so every counterexample is a shortest
event sequence. Checked:

* every ``machine``-scope invariant of ``invariants.yaml`` in every reachable configuration;
* a final state is reachable from every reachable configuration;
* each liveness bound with a ``model_check`` section (for example L2: from refs == 0 a final
  state is reachable without acquire);
* with the spec's own lease bound (or a larger one), every transition of the statechart
  (source, event, target) is taken somewhere (REACHED): a transition no configuration can take
  is dead spec. (A smaller bound legitimately leaves ``refs > 1`` transitions untaken.)
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamwarden.errors import InvalidInputError, InvalidTransitionError
from streamwarden.machine.lifecycle import REVOKE_LEASES, LifecycleMachine
from streamwarden.machine.spec import LifecycleSpec

#: Safety net: a spec whose reachable configurations exceed this is reported as unbounded.
MAX_CONFIGURATIONS = 10_000


@dataclass(frozen=True)
class Step:
    """One event of a path, with the environment inputs set before it.

    ``notable`` names the inputs that differ from their declared initial value; only those
    are shown, so a counterexample reads ``acquire -> release -> acquire[reusable=True]``.
    """

    event: str
    inputs: tuple[tuple[str, Any], ...] = ()
    notable: tuple[str, ...] = ()

    def __str__(self) -> str:
        shown = [f"{name}={value}" for name, value in self.inputs if name in self.notable]
        return f"{self.event}[{', '.join(shown)}]" if shown else self.event


@dataclass(frozen=True)
class Configuration:
    """An abstract configuration of one lifecycle."""

    state: str
    refs: int
    live_leases: int

    def env(self, max_leases: int) -> dict[str, Any]:
        """The variables invariant and environment expressions are evaluated over."""
        return {
            "state": self.state,
            "refs": self.refs,
            "live_leases": self.live_leases,
            "max_leases": max_leases,
        }


@dataclass(frozen=True)
class Violation:
    """A property that fails, with the shortest event path that shows it."""

    property_id: str
    message: str
    path: tuple[Step, ...]

    def counterexample(self) -> str:
        """The path as ``event -> event -> ...`` (``(initial)`` for the empty path)."""
        return " -> ".join(str(step) for step in self.path) or "(initial)"


@dataclass(frozen=True)
class ModelCheckResult:
    """The evidence of one run."""

    configurations: int
    transitions: int
    rejected_events: int
    max_leases: int
    properties_checked: tuple[str, ...]
    spec_sha256: str
    violations: tuple[Violation, ...] = field(default=())
    taken: frozenset[tuple[str, str, str]] = field(default=frozenset())
    """The (source, event, target) transitions taken during the exploration."""

    @property
    def ok(self) -> bool:
        """True when no property failed."""
        return not self.violations


@dataclass
class _Graph:
    paths: dict[Configuration, tuple[Step, ...]]
    edges: dict[Configuration, list[tuple[str, Configuration]]]
    transitions: int = 0
    rejected: int = 0
    truncated: bool = False
    violating: set[Configuration] = field(default_factory=set)
    taken: set[tuple[str, str, str]] = field(default_factory=set)


def _input_valuations(spec: LifecycleSpec) -> list[tuple[tuple[str, Any], ...]]:
    names = sorted(spec.inputs)
    return [tuple(zip(names, values, strict=True))
            for values in itertools.product(*(spec.inputs[n] for n in names))]


def _replay(spec: LifecycleSpec, path: tuple[Step, ...]) -> LifecycleMachine:
    machine = LifecycleMachine(spec)
    for step in path:
        machine.fire(step.event, **dict(step.inputs))
    return machine


def _successors(
    spec: LifecycleSpec, node: Configuration, path: tuple[Step, ...], graph: _Graph, max_leases: int
) -> Iterator[tuple[Step, Configuration]]:
    env = node.env(max_leases)
    for event in spec.events:
        rule = spec.environment.get(event)
        if rule is not None and rule.requires is not None and not rule.requires.evaluate(env):
            continue
        for inputs in _input_valuations(spec):
            try:
                taken = _replay(spec, path).fire(event, **dict(inputs))
            except InvalidTransitionError:
                graph.rejected += 1
                continue
            leases = node.live_leases + (rule.leases if rule is not None else 0)
            if REVOKE_LEASES in taken.effects:
                leases = 0
            graph.transitions += 1
            graph.taken.add((taken.from_state, event, taken.to_state))
            notable = tuple(name for name, value in inputs if spec.datamodel.get(name) != value)
            step = Step(event, inputs, notable)
            yield step, Configuration(taken.to_state, taken.refs_after, leases)


def _violates(spec: LifecycleSpec, node: Configuration, max_leases: int) -> bool:
    env = node.env(max_leases)
    return any(not inv.expr.evaluate(env) for inv in spec.invariants_in("machine"))


def _explore(spec: LifecycleSpec, max_leases: int, max_configurations: int) -> _Graph:
    initial = LifecycleMachine(spec)
    start = Configuration(initial.state, initial.refs, 0)
    graph = _Graph(paths={start: ()}, edges={})
    queue = deque([start])
    while queue:
        node = queue.popleft()
        path = graph.paths[node]
        graph.edges[node] = []
        # A configuration that breaks an invariant is reported, not expanded: a broken spec
        # (say, a release that never decrements) could otherwise grow refs without bound.
        if _violates(spec, node, max_leases):
            graph.violating.add(node)
            continue
        if len(graph.paths) > max_configurations:
            graph.truncated = True
            break
        for step, successor in _successors(spec, node, path, graph, max_leases):
            graph.edges[node].append((step.event, successor))
            if successor not in graph.paths:
                graph.paths[successor] = (*path, step)
                queue.append(successor)
    return graph


def _can_finish(
    graph: _Graph, finals: tuple[str, ...], without: frozenset[str] = frozenset()
) -> set[Configuration]:
    """The configurations from which a final state is reachable avoiding events in ``without``."""
    reverse: dict[Configuration, list[Configuration]] = {node: [] for node in graph.paths}
    for node, successors in graph.edges.items():
        for event, successor in successors:
            if event not in without:
                reverse[successor].append(node)
    done = {node for node in graph.paths if node.state in finals}
    queue = deque(done)
    while queue:
        for predecessor in reverse[queue.popleft()]:
            if predecessor not in done:
                done.add(predecessor)
                queue.append(predecessor)
    return done


def _check_invariants(
    spec: LifecycleSpec, graph: _Graph, max_leases: int
) -> Iterator[Violation]:
    for node, path in graph.paths.items():
        env = node.env(max_leases)
        for invariant in spec.invariants_in("machine"):
            if not invariant.expr.evaluate(env):
                yield Violation(
                    invariant.id,
                    f"{invariant.expr.source} fails in state={node.state} refs={node.refs} "
                    f"live_leases={node.live_leases}",
                    path,
                )


def _check_progress(spec: LifecycleSpec, graph: _Graph, max_leases: int) -> Iterator[Violation]:
    # Configurations that break an invariant, or lie past a truncation, were not expanded;
    # they are reported already.
    excused = graph.violating | (graph.paths.keys() - graph.edges.keys())
    finishing = _can_finish(graph, spec.final_states) | excused
    for node, path in graph.paths.items():
        if node not in finishing:
            yield Violation("STOPPABLE", f"no final state is reachable from {node.state}", path)
    for bound in spec.liveness:
        if bound.check_from is None:
            continue
        finishing = _can_finish(graph, spec.final_states, frozenset(bound.check_without))
        finishing |= excused
        for node, path in graph.paths.items():
            if bound.check_from.evaluate(node.env(max_leases)) and node not in finishing:
                yield Violation(
                    bound.id,
                    f"from {node.state} with refs={node.refs} no final state is reachable "
                    f"without {', '.join(bound.check_without)}",
                    path,
                )


def _check_reached(spec: LifecycleSpec, graph: _Graph, max_leases: int) -> Iterator[Violation]:
    if graph.truncated or max_leases < spec.max_leases:
        return  # stopped early (BOUNDED reports it), or a smaller world than the spec's
    declared = {(t.source, t.event, t.target) for t in spec.transitions}
    for source, event, target in sorted(declared - graph.taken):
        yield Violation("REACHED", f"{source} --{event}--> {target} is never taken", ())


def model_check(
    spec: LifecycleSpec,
    *,
    max_leases: int | None = None,
    max_configurations: int = MAX_CONFIGURATIONS,
) -> ModelCheckResult:
    """Explore every reachable configuration of ``spec`` and check its properties.

    Args:
        max_leases: bound on live leases (default: the spec's ``environment.max_leases``).
        max_configurations: beyond this many configurations the spec is reported unbounded.

    Raises:
        InvalidInputError: if ``max_leases`` is below 1.

    Thread-safety: safe to run concurrently; it shares nothing.
    """
    bound = spec.max_leases if max_leases is None else max_leases
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
        raise InvalidInputError(f"max_leases must be an integer >= 1, got {bound!r}")
    graph = _explore(spec, bound, max_configurations)
    violations = [*_check_invariants(spec, graph, bound), *_check_progress(spec, graph, bound),
                  *_check_reached(spec, graph, bound)]
    if graph.truncated:
        deepest = max(graph.paths.values(), key=len)
        violations.append(Violation(
            "BOUNDED", f"more than {max_configurations} configurations: the spec is unbounded",
            deepest))
    violations.sort(key=lambda violation: len(violation.path))
    checked = [inv.id for inv in spec.invariants_in("machine")]
    checked += ["STOPPABLE", "BOUNDED", "REACHED"]
    checked += [b.id for b in spec.liveness if b.check_from is not None]
    return ModelCheckResult(
        configurations=len(graph.paths),
        transitions=graph.transitions,
        rejected_events=graph.rejected,
        max_leases=bound,
        properties_checked=tuple(checked),
        spec_sha256=spec.sha256,
        violations=tuple(violations),
        taken=frozenset(graph.taken),
    )


def describe(result: ModelCheckResult) -> Mapping[str, Any]:
    """The result as a JSON-serialisable mapping."""
    return {
        "ok": result.ok,
        "configurations": result.configurations,
        "transitions": result.transitions,
        "rejected_events": result.rejected_events,
        "max_leases": result.max_leases,
        "properties_checked": list(result.properties_checked),
        "spec_sha256": result.spec_sha256,
        "violations": [
            {"property": v.property_id, "message": v.message, "counterexample": v.counterexample()}
            for v in result.violations
        ],
    }
