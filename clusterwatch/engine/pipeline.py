"""From observation to event: probe, redact, the state machine, the store, and whoever listens.

The one path every observation takes in `clusterwatch run`, whether the scheduler, the healer's
verification or a restart brought it; what the live view shows is kept here as it passes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from clusterwatch.config.schema import CheckBase, Node
from clusterwatch.engine.events import Event, EventKind
from clusterwatch.engine.once import run_probe
from clusterwatch.engine.state import EntityState, StateMachine
from clusterwatch.model import Observation, Status, json_safe
from clusterwatch.probes.base import ProbeContext
from clusterwatch.redact import Redactor

Item = CheckBase | Node
events_log = logging.getLogger("clusterwatch.events")
SPARK_POINTS = 40

# How loud each kind of event is in the log; state changes depend on where they go.
LEVELS = {
    EventKind.INCIDENT_OPENED: logging.ERROR,
    EventKind.REMEDIATION_EXHAUSTED: logging.ERROR,
    EventKind.REMEDIATION_FAILED: logging.WARNING,
    EventKind.REMEDIATION_STARTED: logging.WARNING,
    EventKind.FLAPPING_STARTED: logging.WARNING,
    EventKind.MONITOR_LAGGING: logging.WARNING,
}


class Pipeline:
    def __init__(
        self,
        states: StateMachine,
        store: Any,
        redactor: Callable[[], Redactor],
        expected_every: Callable[[str], float | None] = lambda _check: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.states = states
        self.store = store
        self._redactor = redactor
        self._expected_every = expected_every
        self._clock = clock
        self.ctx: ProbeContext | None = None
        self.listeners: list[Callable[[Event], None]] = []
        # For the live view: a change counter, each entity's last change, its kind, recent latencies.
        self.version = 0
        self.versions: dict[str, int] = {}
        self.kinds: dict[str, str] = {}
        self.latencies: dict[str, deque[float | None]] = {}

    async def probe(self, item: Item) -> list[Observation]:
        assert self.ctx is not None, "pipeline has no probe context yet"
        observations = await run_probe(item, self.ctx)
        redactor = self._redactor()
        for obs in observations:
            obs.message = redactor.text(obs.message)
            obs.target = redactor.text(obs.target)
            if obs.details:
                obs.details = redactor.data(obs.details)
        return observations

    def handle(self, item: Item, observations: list[Observation], at: float | None = None) -> None:
        """`at`: when the probe ran, for a round an agent pushed (default: now)."""
        now = self._clock() if at is None else at
        # A check that cannot be reached (the Docker daemon, the Dask scheduler) reports none of what it
        # watches: those are not gone, only unseen, and become `unknown` (affected by it), not vanished.
        primary = next((o for o in observations if o.name == item.name and o.down), None)
        if primary is not None:
            observations = observations + self._unseen(item.name, {o.name for o in observations}, primary)
        seen = set()
        every = self._expected_every(item.name)
        for obs in observations:
            seen.add(obs.name)
            events = self.states.process(obs, now)
            state = self.states.entities[obs.name]
            self.kinds[obs.name] = obs.kind
            self._changed(obs.name)
            self.latencies.setdefault(obs.name, deque(maxlen=SPARK_POINTS)).append(obs.latency_ms)
            self.store.observation(obs, now, expected_every=every)
            self.store.entity(state, obs.kind)
            for event in events:
                self.emit(event)
        if primary is None:
            self._vanished(item.name, seen, now)

    def _unseen(self, check: str, seen: set[str], primary: Observation) -> list[Observation]:
        return [
            Observation(
                state.name,
                state.last.kind if state.last else primary.kind,
                state.last.target if state.last else "",
                Status.UNKNOWN,
                f"not seen: {check} is not answering",
                check=check,
                group=state.last.group if state.last else primary.group,
                node=state.node,
            )
            for state in self.states.entities_of(check)
            if state.name not in seen
        ]

    async def reprobe(self, check: CheckBase) -> list[Observation]:
        observations = await self.probe(check)
        self.handle(check, observations)
        return observations

    def _changed(self, name: str) -> None:
        self.version += 1
        self.versions[name] = self.version

    def _vanished(self, check: str, seen: set[str], now: float) -> None:
        """Entities a check no longer reports (a worker scaled away) leave; an open incident closes."""
        for state in self.states.entities_of(check):
            if state.name in seen:
                continue
            if state.incident is not None:
                self.emit(
                    Event(
                        EventKind.INCIDENT_CLOSED,
                        state.name,
                        check,
                        now,
                        f"{state.name} is no longer reported by {check}",
                        node=state.node,
                        new=Status.OK,
                        incident=state.incident,
                        details={"duration_s": round(now - (state.incident_started or now), 3), "vanished": True},
                    )
                )
            self.forget([state.name])

    def forget(self, names: Iterable[str]) -> None:
        names = list(names)
        for name in names:
            self.states.forget(name)
            self.latencies.pop(name, None)
            self._changed(name)
        self.store.forget(names)

    def forget_check(self, check: str) -> None:
        self.forget([e.name for e in self.states.entities_of(check)])

    def emit(self, event: Event) -> None:
        redactor = self._redactor()
        event.message = redactor.text(event.message)
        event.details = json_safe(redactor.data(event.details))
        level = LEVELS.get(event.kind, logging.INFO)
        if event.kind is EventKind.STATE_CHANGE:
            level = logging.INFO if event.new is Status.OK or event.affected_by else logging.WARNING
        suffix = f" (affected: {event.affected_by} is down)" if event.affected_by else ""
        if not self.store.recording():  # a follower in a group of monitors: it sees, the leader acts
            level, suffix = min(level, logging.INFO), suffix + " [seen by a follower: the leader acts]"
        change = (
            f" {event.old.value if event.old else 'pending'} -> {event.new.value}"
            if event.kind is EventKind.STATE_CHANGE and event.new
            else ""
        )
        events_log.log(level, "%s %s%s: %s%s", event.kind.value, event.entity, change, event.message, suffix)
        self.store.event(event)
        for listener in self.listeners:
            listener(event)

    def restore(self, rows: Iterable[Any], known: Callable[[str], bool]) -> int:
        """Resume after a restart: hard states, streaks and open incidents come back from the store."""
        restored = 0
        for row in rows:
            if not known(row["check_name"]):
                continue
            state = EntityState(
                name=row["name"],
                check=row["check_name"],
                node=row["node"],
                hard=Status(row["hard"]) if row["hard"] else None,
                since=row["since"] or self._clock(),
                incident=row["incident"],
                incident_started=row["incident_started"],
                flapping=bool(row["flapping"]),
                affected_by=row["affected_by"],
                fail_streak=row["fail_streak"],
                ok_streak=row["ok_streak"],
                last_at=row["updated"] or 0.0,
            )
            for letter in (row["history"] or "").split(","):
                if letter:
                    state.history.append(Status(letter))
            state.last = Observation(
                row["name"],
                row["kind"],
                "",
                Status(row["status"]),
                row["message"] or "",
                row["latency_ms"],
                check=row["check_name"],
                node=row["node"],
                down=bool(row["down"]),
            )
            self.states.restore(state)
            self.kinds[row["name"]] = row["kind"]
            restored += 1
        return restored

    def open_incidents(self) -> list[EntityState]:
        return [e for e in self.states.entities.values() if e.incident]
