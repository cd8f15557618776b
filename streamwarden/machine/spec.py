"""Loading the formal spec: the statechart (``lifecycle.yaml``) and its invariants.

The statechart is loaded with ``statemachine.io.load(..., validate=True)``; the resulting class
is the only transition table in streamwarden. ``invariants.yaml`` beside it holds the invariants,
liveness bounds and the environment assumptions of the model check, as expressions over the
same variables.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from statemachine.exceptions import InvalidDefinition
from statemachine.io import load
from statemachine.io.yaml.reader import YAMLReader

from streamwarden.errors import StreamwardenError
from streamwarden.machine.expressions import Expression, ExpressionError

STATECHART_FILE = "lifecycle.yaml"
INVARIANTS_FILE = "invariants.yaml"
SCOPES = ("machine", "connection", "manager")


class SpecError(StreamwardenError):
    """The spec files are missing, malformed or inconsistent with each other."""


@dataclass(frozen=True)
class Invariant:
    """One invariant: ``expr`` must hold in every reachable configuration."""

    id: str
    scope: str
    expr: Expression
    protects: str


@dataclass(frozen=True)
class LivenessBound:
    """A liveness property with its time bound, in words.

    When ``check_from`` is set, the model check verifies its untimed core: from every reachable
    configuration where ``check_from`` holds, a final state is reachable without the events in
    ``check_without``.
    """

    id: str
    bound: str
    statement: str
    check_from: Expression | None
    check_without: tuple[str, ...]


@dataclass(frozen=True)
class TransitionSpec:
    """One transition as written in the statechart document, for docs and diagrams."""

    source: str
    event: str
    guard: str | None
    target: str
    refs: str | None
    effects: tuple[str, ...]


@dataclass(frozen=True)
class EnvironmentEvent:
    """How the manager sends an event: only when ``requires`` holds; lease count change."""

    name: str
    requires: Expression | None
    leases: int


@dataclass(frozen=True)
class LifecycleSpec:
    """The loaded spec. Thread-safe: immutable; ``machine_class`` instances are not shared."""

    directory: Path
    machine_class: type[Any]
    states: tuple[str, ...]
    initial_state: str
    final_states: tuple[str, ...]
    events: tuple[str, ...]
    transitions: tuple[TransitionSpec, ...]
    datamodel: Mapping[str, Any]
    invariants: tuple[Invariant, ...]
    liveness: tuple[LivenessBound, ...]
    environment: Mapping[str, EnvironmentEvent]
    inputs: Mapping[str, tuple[Any, ...]]
    max_leases: int
    sha256: str

    def invariants_in(self, *scopes: str) -> tuple[Invariant, ...]:
        """The invariants whose scope is one of ``scopes``."""
        return tuple(inv for inv in self.invariants if inv.scope in scopes)


def _read_yaml(path: Path, *, statechart: bool = False) -> Any:
    # The statechart is parsed exactly as python-statemachine parses it (its loader keeps
    # ``on``/``off`` as strings, where YAML 1.1 would read them as booleans).
    parse = YAMLReader().parse_document if statechart else yaml.safe_load
    try:
        return parse(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError(f"spec file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"spec file {path} is not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """The parser's complaint on one line, with where it is."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(error).split())


def _load_machine_class(path: Path) -> type[Any]:
    try:
        machine_class: type[Any] = load(path, validate=True)
    except (InvalidDefinition, ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"statechart {path} is invalid: {exc}") from None
    # Strict semantics: an event with no enabled transition is an error, never a no-op, and an
    # exception in an action propagates instead of becoming an internal error event.
    machine_class.allow_event_without_transition = False
    machine_class.catch_errors_as_events = False
    return machine_class


def _datamodel(document: Mapping[str, Any], path: Path) -> dict[str, Any]:
    # python-statemachine 3.2 initialises a loaded class's datamodel on its first instance only
    # (a closure flag in io/actions.py), so the lifecycle model applies these values itself.
    values: dict[str, Any] = {}
    for name, source in (document.get("datamodel") or {}).items():
        try:
            values[name] = ast.literal_eval(str(source))
        except (ValueError, SyntaxError):
            message = f"{path}: datamodel {name!r} must be a literal, got {source!r}"
            raise SpecError(message) from None
    return values


def _refs_effect(actions: list[Any]) -> str | None:
    for action in actions:
        assign = action.get("assign") if isinstance(action, Mapping) else None
        if assign and assign.get("location") == "refs":
            return str(assign.get("expr"))
    return None


def _transitions(document: Mapping[str, Any]) -> tuple[TransitionSpec, ...]:
    result = []
    for source, state in (document.get("states") or {}).items():
        for item in (state or {}).get("transitions") or []:
            actions = item.get("on") or []
            actions = actions if isinstance(actions, list) else [actions]
            guard = item.get("cond")
            result.append(TransitionSpec(
                source=source,
                event=item.get("event", ""),
                guard=" and ".join(guard) if isinstance(guard, list) else guard,
                target=item.get("target", source),
                refs=_refs_effect(actions),
                effects=tuple(a for a in actions if isinstance(a, str)),
            ))
    return tuple(result)


def _invariants(raw: Mapping[str, Any], path: Path) -> tuple[Invariant, ...]:
    result = []
    for item in raw.get("invariants") or []:
        scope = item.get("scope")
        if scope not in SCOPES:
            raise SpecError(f"{path}: invariant {item.get('id')!r} has unknown scope {scope!r}")
        result.append(
            Invariant(id=item["id"], scope=scope, expr=Expression(item["expr"]),
                      protects=item["protects"])
        )
    return tuple(result)


def _liveness(raw: Mapping[str, Any]) -> tuple[LivenessBound, ...]:
    result = []
    for item in raw.get("liveness") or []:
        check = item.get("model_check") or {}
        result.append(
            LivenessBound(
                id=item["id"],
                bound=item["bound"],
                statement=item["statement"],
                check_from=Expression(check["from"]) if "from" in check else None,
                check_without=tuple(check.get("without") or ()),
            )
        )
    return tuple(result)


def _environment(raw: Mapping[str, Any], events: tuple[str, ...], path: Path) -> dict[
    str, EnvironmentEvent
]:
    result = {}
    for name, item in ((raw.get("environment") or {}).get("events") or {}).items():
        if name not in events:
            raise SpecError(f"{path}: environment names unknown event {name!r}")
        requires = item.get("requires")
        result[name] = EnvironmentEvent(
            name=name,
            requires=Expression(requires) if requires else None,
            leases=int(item.get("leases", 0)),
        )
    return result


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_spec(directory: Path | None = None) -> LifecycleSpec:
    """Load and check the spec from ``directory`` (default: the packaged ``streamwarden/spec``).

    Raises:
        SpecError: if a file is missing or malformed, the statechart fails python-statemachine's
            schema, or the invariants file names unknown scopes, events or syntax.

    Thread-safety: safe to call concurrently; each call builds a new class.
    """
    base = directory if directory is not None else Path(str(files("streamwarden") / "spec"))
    chart_path, invariants_path = base / STATECHART_FILE, base / INVARIANTS_FILE
    document = _read_yaml(chart_path, statechart=True)
    raw = _read_yaml(invariants_path)
    if not isinstance(document, Mapping) or not isinstance(raw, Mapping):
        raise SpecError(f"spec files in {base} must each hold a mapping")
    machine_class = _load_machine_class(chart_path)
    states = tuple(state.id for state in machine_class.states)
    events = tuple(event.id for event in machine_class.events)
    try:
        invariants = _invariants(raw, invariants_path)
        liveness = _liveness(raw)
        env_events = _environment(raw, events, invariants_path)
        environment = raw.get("environment") or {}
        inputs = {name: tuple(values)
                  for name, values in (environment.get("inputs") or {}).items()}
        max_leases = int(environment.get("max_leases", 4))
    except ExpressionError as exc:
        raise SpecError(f"{invariants_path}: {exc.message}") from None
    except KeyError as exc:
        raise SpecError(f"{invariants_path}: missing key {exc}") from None
    except (AttributeError, TypeError, ValueError) as exc:  # a list where a mapping belongs...
        raise SpecError(f"{invariants_path}: unexpected structure: {exc}") from None
    return LifecycleSpec(
        directory=base,
        machine_class=machine_class,
        states=states,
        initial_state=machine_class.initial_state.id,
        final_states=tuple(state.id for state in machine_class.final_states),
        events=events,
        transitions=_transitions(document),
        datamodel=_datamodel(document, chart_path),
        invariants=invariants,
        liveness=liveness,
        environment=env_events,
        inputs=inputs,
        max_leases=max_leases,
        sha256=_digest(chart_path, invariants_path),
    )


@functools.cache
def default_spec() -> LifecycleSpec:
    """The packaged spec, loaded once per process. Thread-safe."""
    return load_spec()
