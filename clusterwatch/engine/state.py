"""What observations mean: soft and hard states, flapping, dependencies and incidents.

HAProxy's `fall`/`rise` decide hard transitions; Nagios' weighted share of state changes
over the last 21 observations decides flapping; a failing root (a check's `depends_on`,
or the node a check runs on) makes its dependants "affected" instead of new incidents.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from clusterwatch.engine.events import Event, EventKind
from clusterwatch.model import Observation, Status

FLAP_WINDOW = 21


@dataclass
class Rules:
    """What the state machine needs to know about one check (or node)."""

    fall: int = 2
    rise: int = 2
    roots: tuple[str, ...] = ()  # names of checks/nodes this one depends on


@dataclass
class EntityState:
    name: str
    check: str
    node: str | None = None
    hard: Status | None = None  # None: not yet known (pending)
    since: float = 0.0
    last: Observation | None = None
    last_at: float = 0.0
    seen: bool = False  # observed by this process (not only restored from the store)
    fail_streak: int = 0
    same_streak: int = 0  # consecutive observations at exactly last.status
    ok_streak: int = 0
    history: deque[Status] = field(default_factory=lambda: deque(maxlen=FLAP_WINDOW))
    flapping: bool = False
    flap_percent: float = 0.0
    incident: str | None = None
    incident_started: float | None = None
    affected_by: str | None = None

    @property
    def down(self) -> bool:
        return self.hard is not None and self.hard is not Status.OK


def flap_percent(history: deque[Status] | list[Status]) -> float:
    """Nagios: changes between consecutive states over a 21-observation window, weighted 0.8
    (oldest) to 1.2 (newest). A short history counts as unchanged before it began, so one
    outage and its recovery soon after start-up is not mistaken for flapping."""
    states = list(history)[-FLAP_WINDOW:]
    transitions = FLAP_WINDOW - 1
    offset = FLAP_WINDOW - len(states)  # where this history sits in the full window
    total = 0.0
    for i in range(1, len(states)):
        if states[i] != states[i - 1]:
            position = offset + i - 1  # 0 (oldest transition) .. transitions - 1 (newest)
            total += 0.8 + 0.4 * position / (transitions - 1)
    return 100.0 * total / transitions


class StateMachine:
    def __init__(self, rules: Callable[[str], Rules], *, flap_high: float = 30.0, flap_low: float = 15.0) -> None:
        self.rules = rules
        self.flap_high, self.flap_low = flap_high, flap_low
        self.entities: dict[str, EntityState] = {}
        self._by_check: dict[str, dict[str, EntityState]] = {}

    def _add(self, state: EntityState) -> EntityState:
        self.entities[state.name] = state
        self._by_check.setdefault(state.check, {})[state.name] = state
        return state

    def restore(self, state: EntityState) -> None:
        """Resume after a restart: hard states and open incidents come back from the store."""
        self._add(state)

    def clear(self) -> None:
        """A monitor taking over a group: its own view gives way to the one the store holds."""
        self.entities.clear()
        self._by_check.clear()

    def forget(self, name: str) -> None:
        state = self.entities.pop(name, None)
        if state is not None:
            self._by_check.get(state.check, {}).pop(name, None)

    def forget_check(self, check: str) -> None:
        for name in list(self._by_check.pop(check, {})):
            self.entities.pop(name, None)

    def entities_of(self, check: str) -> list[EntityState]:
        return list(self._by_check.get(check, {}).values())

    def root_failing(self, check: str, entity: str, status: Status) -> str | None:
        """The nearest failing root of this entity, if any."""
        rules = self.rules(check)
        for root in rules.roots:
            state = self.entities.get(root)
            if state is not None and self._failing(state):
                return root
        if entity != check and status is Status.UNKNOWN:
            primary = self.entities.get(check)  # e.g. the Dask scheduler for its workers
            if primary is not None and self._failing(primary):
                return check
        return None

    @staticmethod
    def _failing(state: EntityState) -> bool:
        """Not serving — down, or failing right now: a root's first failures already explain its
        dependants'. A root that answers but is degraded (a node's full disk, a Dask cluster short
        of workers) explains nothing: its dependants' failures are their own, and get healed."""
        if state.last is None or not state.last.down:
            return False
        bad = (Status.CRITICAL, Status.UNKNOWN)
        return state.hard in bad or state.last.status in bad

    def process(self, obs: Observation, now: float) -> list[Event]:
        check = obs.check or obs.name
        state = self.entities.get(obs.name)
        if state is None:
            state = self._add(EntityState(obs.name, check, obs.node, since=now))
        rules = self.rules(check)
        events: list[Event] = []
        previous = state.last.status if state.last else None
        state.last, state.last_at, state.seen = obs, now, True
        state.history.append(obs.status)

        if obs.status is Status.OK:
            state.ok_streak += 1
            state.fail_streak = 0
        else:
            state.fail_streak += 1
            state.ok_streak = 0
        state.same_streak = state.same_streak + 1 if previous is obs.status else 1

        events.extend(self._flapping(state, obs, now))

        new_hard = self._next_hard(state, obs.status, rules)
        if new_hard is not None and new_hard is not state.hard:
            old = state.hard
            state.hard, state.since = new_hard, now
            if new_hard is not Status.OK:
                state.affected_by = self.root_failing(check, state.name, obs.status)
            if old is not None or new_hard is not Status.OK:
                events.append(self._event(EventKind.STATE_CHANGE, state, obs, now, old=old, new=new_hard))
            if new_hard is Status.OK:
                events.extend(self._close(state, obs, now))

        if state.down and obs.status is not Status.OK:
            events.extend(self._open_if_own_failure(state, obs, now))
        return events

    def _next_hard(self, state: EntityState, status: Status, rules: Rules) -> Status | None:
        if status is Status.OK:
            if state.hard is None or state.ok_streak >= rules.rise:
                return Status.OK
            return None
        if state.hard is None or state.hard is Status.OK:
            return status if state.fail_streak >= rules.fall else None
        # Already down: a change of severity needs `fall` observations at the new one.
        return status if status is not state.hard and state.same_streak >= rules.fall else None

    def _flapping(self, state: EntityState, obs: Observation, now: float) -> list[Event]:
        state.flap_percent = flap_percent(state.history)
        if not state.flapping and state.flap_percent > self.flap_high:
            state.flapping = True
            return [
                self._event(
                    EventKind.FLAPPING_STARTED,
                    state,
                    obs,
                    now,
                    message=f"{state.name} is flapping ({state.flap_percent:.0f}% state changes): "
                    "no alerts per flap and no restarts until it settles",
                )
            ]
        if state.flapping and state.flap_percent < self.flap_low:
            state.flapping = False
            return [
                self._event(
                    EventKind.FLAPPING_STOPPED,
                    state,
                    obs,
                    now,
                    message=f"{state.name} stopped flapping ({state.flap_percent:.0f}%)",
                )
            ]
        return []

    def _open_if_own_failure(self, state: EntityState, obs: Observation, now: float) -> list[Event]:
        root = self.root_failing(state.check, state.name, obs.status)
        state.affected_by = root
        if root is not None or state.incident is not None:
            return []
        if any(self.entities.get(r) is None for r in self.rules(state.check).roots):
            return []  # a root not looked at yet: don't blame the dependant before knowing
        state.incident = uuid.uuid4().hex[:12]
        state.incident_started = now
        return [self._event(EventKind.INCIDENT_OPENED, state, obs, now, new=state.hard)]

    def _close(self, state: EntityState, obs: Observation, now: float) -> list[Event]:
        state.affected_by = None
        if state.incident is None:
            return []
        started = state.incident_started or now
        event = self._event(
            EventKind.INCIDENT_CLOSED,
            state,
            obs,
            now,
            new=Status.OK,
            message=f"{state.name} recovered after {now - started:.0f}s: {obs.message}",
        )
        event.details["duration_s"] = round(now - started, 3)
        event.details["opened_at"] = started
        state.incident, state.incident_started = None, None
        return [event]

    @staticmethod
    def _event(
        kind: EventKind,
        state: EntityState,
        obs: Observation,
        now: float,
        *,
        old: Status | None = None,
        new: Status | None = None,
        message: str | None = None,
    ) -> Event:
        return Event(
            kind=kind,
            entity=state.name,
            check=state.check,
            at=now,
            node=state.node,
            message=message or obs.message,
            old=old,
            new=new,
            incident=state.incident,
            affected_by=state.affected_by,
            details={"flapping": state.flapping, "status": obs.status.value},
        )
