"""Events: the one currency between the state machine and the store, healer, alerter and web."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from clusterwatch.model import Status


class EventKind(enum.StrEnum):
    STATE_CHANGE = "state_change"  # a hard transition
    INCIDENT_OPENED = "incident_opened"
    INCIDENT_CLOSED = "incident_closed"
    FLAPPING_STARTED = "flapping_started"
    FLAPPING_STOPPED = "flapping_stopped"
    REMEDIATION_STARTED = "remediation_started"
    REMEDIATION_SUCCEEDED = "remediation_succeeded"
    REMEDIATION_FAILED = "remediation_failed"
    REMEDIATION_EXHAUSTED = "remediation_exhausted"
    MONITOR_LAGGING = "monitor_lagging"
    LEADER_ELECTED = "leader_elected"  # a group of monitors: this one took over acting
    AGENT_BACK = "agent_back"  # a node's agent is heard again after a silence: the gap, said once
    AGENT_HEALING_TAKEN = "agent_healing_taken"  # an agent cut off from every monitor heals on its own
    AGENT_HEALING_RETURNED = "agent_healing_returned"  # ... and hands healing back to the monitor


@dataclass(slots=True)
class Event:
    kind: EventKind
    entity: str
    check: str
    at: float
    message: str
    node: str | None = None
    old: Status | None = None
    new: Status | None = None
    incident: str | None = None
    affected_by: str | None = None  # the failing root this entity depends on
    details: dict[str, Any] = field(default_factory=dict)
