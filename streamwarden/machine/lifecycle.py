"""One lifecycle's state machine, built from the spec, with transactional transitions.

:class:`LifecycleMachine` sends events to an instance of the spec's machine class and reports
what happened as a :class:`Transition`: states and ``refs`` before and after, and the effects the
spec attached (``start_transport``, ``revoke_leases``, ``reconnect_transport``). Effects are
*recorded*, not carried out: the manager carries them out after the transition has been written
to the audit trail, and if that write fails it calls :meth:`LifecycleMachine.rollback`, so no
change takes effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from statemachine.exceptions import TransitionNotAllowed

from streamwarden.errors import InvalidTransitionError
from streamwarden.machine.spec import LifecycleSpec

START_TRANSPORT = "start_transport"
REVOKE_LEASES = "revoke_leases"
RECONNECT_TRANSPORT = "reconnect_transport"


@dataclass(frozen=True)
class Transition:
    """What one accepted event did to a lifecycle."""

    event: str
    from_state: str
    to_state: str
    refs_before: int
    refs_after: int
    effects: tuple[str, ...]


class LifecycleModel:
    """The object the spec's machine reads and writes: its datamodel and effect callbacks.

    The spec's bare-string actions resolve to the methods below; a spec naming a callback that
    does not exist here fails when the machine is built.
    """

    state: str
    refs: int
    reusable: bool

    def __init__(self, datamodel: Mapping[str, Any], state: str | None = None) -> None:
        for name, value in datamodel.items():
            setattr(self, name, value)
        if state is not None:
            self.state = state
        self.effects: list[str] = []

    def start_transport(self) -> None:
        """Effect: open the connection."""
        self.effects.append(START_TRANSPORT)

    def revoke_leases(self) -> None:
        """Effect: revoke every live lease."""
        self.effects.append(REVOKE_LEASES)

    def reconnect_transport(self) -> None:
        """Effect: close the socket so that the transport connects again."""
        self.effects.append(RECONNECT_TRANSPORT)


class LifecycleMachine:
    """The spec's state machine for one lifecycle.

    Thread-safety: not thread-safe; the manager serialises every call under its lock.
    """

    def __init__(self, spec: LifecycleSpec) -> None:
        self._spec = spec
        self._model = LifecycleModel(spec.datamodel)
        self._machine = spec.machine_class(model=self._model)

    @property
    def state(self) -> str:
        """The current state's id."""
        return self._model.state

    @property
    def refs(self) -> int:
        """The spec's reference count."""
        return self._model.refs

    def fire(self, event: str, **inputs: Any) -> Transition:
        """Send ``event``, first setting the spec's environment ``inputs`` (e.g. ``reusable``).

        Returns:
            The transition taken, with the effects the spec attached to it.

        Raises:
            InvalidTransitionError: if the spec has no enabled transition for ``event`` in the
                current state (unknown event, false guard, or the final state); nothing changes.
        """
        state, refs = self._model.state, self._model.refs
        if event not in self._spec.events:
            raise InvalidTransitionError(
                f"{event!r} is not an event of the lifecycle spec", operation=event, state=state
            )
        saved_inputs = {name: getattr(self._model, name) for name in inputs}
        for name, value in inputs.items():
            setattr(self._model, name, value)
        self._model.effects.clear()
        try:
            self._machine.send(event)
        except TransitionNotAllowed:
            for name, value in saved_inputs.items():
                setattr(self._model, name, value)
            raise InvalidTransitionError(
                f"the spec allows no {event!r} in state {state!r} with refs={refs}",
                operation=event,
                state=state,
            ) from None
        return Transition(
            event=event,
            from_state=state,
            to_state=self._model.state,
            refs_before=refs,
            refs_after=self._model.refs,
            effects=tuple(self._model.effects),
        )

    def rollback(self, transition: Transition) -> None:
        """Undo ``transition`` (the last one fired), as if it had never been sent.

        The machine instance is rebuilt on the restored model because python-statemachine stops
        its engine once a final state is reached.
        """
        self._model.state = transition.from_state
        self._model.refs = transition.refs_before
        self._model.effects.clear()
        self._machine = self._spec.machine_class(model=self._model)
