"""The state machine alone: fall/rise, severity changes, flapping, dependencies, incidents."""

from __future__ import annotations

from clusterwatch.engine.state import Rules, StateMachine, flap_percent
from clusterwatch.model import Observation, Status

OK, WARN, CRIT, UNK = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN


def obs(name: str, status: Status, check: str | None = None, down: bool | None = None) -> Observation:
    """A failure is "not serving" unless said otherwise (as a probe's connection failures are)."""
    down = status in (CRIT, UNK) if down is None else down
    return Observation(name, "tcp", "t", status, f"{name} is {status.value}", check=check or name, down=down)


def feed(sm: StateMachine, name: str, statuses: list[Status], check: str | None = None, start: float = 0.0):
    events = []
    for i, status in enumerate(statuses):
        events.extend(sm.process(obs(name, status, check), start + i))
    return events


def kinds(events) -> list[str]:
    return [e.kind.value for e in events]


def machine(**rules: Rules) -> StateMachine:
    return StateMachine(lambda name: rules.get(name, Rules(fall=2, rise=2)))


def test_fall_and_rise():
    sm = machine()
    assert feed(sm, "api", [OK, CRIT]) == []  # one failure is soft
    events = feed(sm, "api", [CRIT], start=2)
    assert kinds(events) == ["state_change", "incident_opened"]
    assert events[0].old is OK and events[0].new is CRIT
    assert feed(sm, "api", [OK], start=3) == []  # one success is not recovery
    events = feed(sm, "api", [OK], start=4)
    assert kinds(events) == ["state_change", "incident_closed"]
    assert events[1].details["duration_s"] == 2.0


def test_a_failure_at_start_needs_fall_too_and_ok_at_start_is_silent():
    sm = machine()
    assert feed(sm, "a", [OK, OK, OK]) == []
    assert feed(sm, "b", [CRIT]) == []
    assert kinds(feed(sm, "b", [CRIT], start=1)) == ["state_change", "incident_opened"]


def test_interrupted_failures_never_go_down():
    sm = machine()
    assert feed(sm, "api", [CRIT, OK, CRIT, OK, CRIT, OK][:4]) == []
    assert sm.entities["api"].hard is OK


def test_severity_change_needs_fall_observations():
    sm = machine()
    feed(sm, "disk", [WARN, WARN])
    assert sm.entities["disk"].hard is WARN
    assert kinds(feed(sm, "disk", [CRIT], start=2)) == []
    events = feed(sm, "disk", [CRIT], start=3)
    assert kinds(events) == ["state_change"] and events[0].old is WARN and events[0].new is CRIT
    assert sm.entities["disk"].incident is not None  # the same incident, escalated


def test_flap_percent_weights_recent_changes_more():
    assert flap_percent([OK] * 21) == 0
    assert round(flap_percent([OK, CRIT] * 10 + [OK]), 6) == 100
    old_changes = [OK, CRIT] * 3 + [OK] * 15
    new_changes = [OK] * 15 + [CRIT, OK] * 3
    assert flap_percent(new_changes) > flap_percent(old_changes)


def test_flapping_starts_and_stops():
    sm = StateMachine(lambda name: Rules(fall=1, rise=1), flap_high=30, flap_low=15)
    events = feed(sm, "api", [OK, CRIT] * 4)
    assert "flapping_started" in kinds(events)
    assert sm.entities["api"].flapping
    events = feed(sm, "api", [OK] * 21, start=10)
    assert "flapping_stopped" in kinds(events)
    assert not sm.entities["api"].flapping


def test_dependants_of_a_failing_root_are_affected_not_incidents():
    sm = machine(webui=Rules(fall=2, rise=2, roots=("ollama",)))
    feed(sm, "ollama", [CRIT])  # the root fails first (soft)
    events = feed(sm, "webui", [CRIT, CRIT], start=1)
    assert kinds(events) == ["state_change"]
    assert events[0].affected_by == "ollama"
    events = feed(sm, "ollama", [CRIT], start=3)
    assert kinds(events) == ["state_change", "incident_opened"]
    # The root recovers, then the dependant: still no incident of its own.
    assert kinds(feed(sm, "ollama", [OK, OK], start=4)) == ["state_change", "incident_closed"]
    assert kinds(feed(sm, "webui", [OK, OK], start=6)) == ["state_change"]
    assert sm.entities["webui"].incident is None


def test_dependant_still_failing_after_root_recovers_opens_its_own_incident():
    sm = machine(webui=Rules(fall=2, rise=2, roots=("ollama",)))
    feed(sm, "ollama", [CRIT, CRIT])
    feed(sm, "webui", [CRIT, CRIT], start=2)
    feed(sm, "ollama", [OK, OK], start=4)
    events = feed(sm, "webui", [CRIT], start=6)
    assert kinds(events) == ["incident_opened"]
    assert events[0].affected_by is None


def test_unknown_workers_follow_their_scheduler():
    sm = machine()
    feed(sm, "dask", [CRIT, CRIT])
    events = feed(sm, "dask/w1", [UNK, UNK], check="dask", start=2)
    assert kinds(events) == ["state_change"] and events[0].affected_by == "dask"


def test_one_outage_soon_after_start_is_not_flapping():
    sm = StateMachine(lambda name: Rules(fall=2, rise=1), flap_high=30, flap_low=15)
    events = feed(sm, "svc", [OK] * 5 + [CRIT, CRIT, OK] + [OK] * 3)
    assert "flapping_started" not in kinds(events)
    assert kinds(events) == ["state_change", "incident_opened", "state_change", "incident_closed"]


def test_no_incident_for_a_dependant_before_its_root_was_looked_at():
    sm = machine(svc=Rules(fall=1, rise=1, roots=("box",)))
    assert kinds(feed(sm, "svc", [CRIT])) == ["state_change"]  # no incident yet
    feed(sm, "box", [CRIT], start=1)
    assert kinds(feed(sm, "svc", [CRIT], start=2)) == []  # now known: affected
    assert sm.entities["svc"].affected_by == "box"


def test_a_degraded_root_does_not_hide_its_dependants_failures():
    """A node that answers but has a full disk (or a Dask cluster short of workers) is not "down"."""
    sm = machine(svc=Rules(fall=1, rise=1, roots=("box",)))
    sm.process(obs("box", CRIT, down=False), 0)
    sm.process(obs("box", CRIT, down=False), 1)
    events = sm.process(obs("svc", CRIT), 2)
    assert kinds(events) == ["state_change", "incident_opened"]
    assert events[0].affected_by is None
