"""What an agent and the monitor say to each other: JSON over HTTP(S), the agent's own bearer token.

    GET  /api/v1/agent/config  -> AgentConfig: the node, its checks, the defaults, the budget used
    POST /api/v1/agent/push    <- Push: rounds of observations and what the agent did while cut off,
                                  in the order they happened (one `seq` across both)   -> PushAnswer
    POST /api/v1/agent/poll    <- Poll: results of earlier commands                   -> PollAnswer
                                  (the monitor holds it open up to `wait` seconds until it has a command)

The agent only ever pushes and polls (it may sit behind NAT on mobile data); the monitor never opens
a connection to it. Everything the agent sends is an observation or a report, never an instruction:
what a restart runs comes from the monitor's config, in the command or in the AgentConfig.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clusterwatch.config.schema import NAME_PATTERN
from clusterwatch.model import Group, Observation, Status

CONFIG_PATH = "/api/v1/agent/config"
PUSH_PATH = "/api/v1/agent/push"
POLL_PATH = "/api/v1/agent/poll"
AGENT_PATHS = (CONFIG_PATH, PUSH_PATH, POLL_PATH)
MAX_BODY = 2 * 1024 * 1024  # bytes of one push or poll; more is 413
MAX_ROUNDS = 1000  # rounds per push (an agent back from a long cut sends its queue in several)
MAX_EVENTS = 500
MAX_OBSERVATIONS = 1000  # per round (a node's disks and GPUs, a Dask cluster's workers)
POLL_WAIT = 20.0  # seconds the monitor holds a poll open; the agent's read timeout is above it

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=100)]
Seq = Annotated[int, Field(ge=1, le=2**62)]
Text = Annotated[str, Field(max_length=20_000)]


def _finite_time(value: float) -> float:
    if not math.isfinite(value) or not 0 < value < 1e11:
        raise ValueError("a time must be a finite Unix timestamp")
    return value


class Wire(BaseModel):
    """Unknown keys, NaN and infinity are refused: what an agent sends is checked like a config."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class WireObservation(Wire):
    name: Annotated[str, Field(min_length=1, max_length=300)]
    kind: Annotated[str, Field(max_length=50)]
    target: Annotated[str, Field(max_length=300)] = ""
    status: Status
    message: Text = ""
    latency_ms: float | None = None
    metrics: dict[Annotated[str, Field(max_length=100)], float] = Field(default_factory=dict, max_length=200)
    details: dict[str, Any] = Field(default_factory=dict, max_length=100)
    group: Group = Group.SERVICES
    down: bool = False

    @classmethod
    def of(cls, obs: Observation) -> WireObservation:
        return cls(
            name=obs.name,
            kind=obs.kind,
            target=obs.target,
            status=obs.status,
            message=obs.message,
            latency_ms=obs.latency_ms,
            metrics=obs.metrics,
            details=obs.details,
            group=obs.group,
            down=obs.down,
        )

    def observation(self, check: str, node: str) -> Observation:
        """As the monitor files it: the check and node are the ones the agent's token stands for."""
        return Observation(
            name=self.name,
            kind=self.kind,
            target=self.target,
            status=self.status,
            message=self.message,
            latency_ms=self.latency_ms,
            metrics=dict(self.metrics),
            details=dict(self.details),
            check=check,
            group=self.group,
            node=node,
            down=self.down,
        )


class Round(Wire):
    """One run of one check (or of the node itself, `check` = the node's name) on the agent."""

    seq: Seq
    at: float  # the agent's clock when the probe ran; the monitor corrects it by `Push.sent_at`
    check: Name
    observations: list[WireObservation] = Field(max_length=MAX_OBSERVATIONS)

    _at = field_validator("at")(classmethod(lambda cls, v: _finite_time(v)))


AgentEventKind = Literal[
    "remediation_started",
    "remediation_succeeded",
    "remediation_failed",
    "remediation_exhausted",
    "healing_taken",  # the agent lost every monitor and heals its own checks from here on
    "healing_returned",  # a monitor answers again: healing is the monitor's again
]


class AgentEvent(Wire):
    """What the agent did (or decided) while it was cut off: filed as history, never alerted late."""

    seq: Seq
    at: float
    kind: AgentEventKind
    check: Name | None = None
    entity: Annotated[str, Field(max_length=300)] | None = None
    message: Text
    details: dict[str, Any] = Field(default_factory=dict, max_length=100)

    _at = field_validator("at")(classmethod(lambda cls, v: _finite_time(v)))


class Push(Wire):
    node: Name
    sent_at: float  # the agent's clock when it sent this: the monitor's offset to it
    rounds: list[Round] = Field(default_factory=list, max_length=MAX_ROUNDS)
    events: list[AgentEvent] = Field(default_factory=list, max_length=MAX_EVENTS)
    config_version: str | None = Field(None, max_length=100)  # the AgentConfig it runs

    _sent = field_validator("sent_at")(classmethod(lambda cls, v: _finite_time(v)))


class PushAnswer(Wire):
    accepted: int  # the highest seq the monitor has filed: the agent drops its queue up to it
    config_version: str  # differs from what the agent runs: fetch AgentConfig again
    budgets: dict[str, list[float]] = {}  # restart target -> attempts that count (monitor's clock)


class CommandResult(Wire):
    id: Annotated[str, Field(max_length=64)]
    ok: bool
    detail: Text = ""


class Poll(Wire):
    node: Name
    results: list[CommandResult] = Field(default_factory=list, max_length=100)
    wait: Annotated[float, Field(ge=0, le=60)] = POLL_WAIT


class Command(Wire):
    """`restart`: run `policy` (the monitor's RestartPolicy for `check`) here, now. `probe`: run
    `check` now and push its round (the monitor verifies a restart with it)."""

    id: str
    kind: Literal["restart", "probe"]
    check: Name
    policy: dict[str, Any] | None = None


class PollAnswer(Wire):
    commands: list[Command] = []
    config_version: str


class AgentConfig(Wire):
    """The node's part of the monitor's config: enough for the agent to need no config file."""

    node: dict[str, Any]  # a Node (without its ssh options)
    checks: list[dict[str, Any]]  # every check whose `node:` is this node, restart policies included
    defaults: dict[str, Any]  # interval, timeout, fall, rise, retry_interval, thresholds, node_thresholds, flapping
    agent_timeout: float  # the monitor calls the agent silent after this; the agent heals alone after it
    version: str  # a hash of all of the above
    budgets: dict[str, list[float]] = {}
    server_time: float  # the monitor's clock when it answered
