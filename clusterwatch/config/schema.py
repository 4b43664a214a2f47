"""What a configuration is. Loading, imports and error messages live in `loader.py`.

Every number is finite and bounded, and every timeout, interval, window and backoff is more than
zero: a value the monitor cannot run with is refused here, with its line, not found later by a
division by zero in the scheduler.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from clusterwatch.config.durations import parse_duration, parse_size, positive_duration
from clusterwatch.config.files import FileProblem, read_text

Duration = Annotated[float, BeforeValidator(positive_duration)]  # timeouts, intervals, windows: 1ms to 10 years
Delay = Annotated[float, BeforeValidator(parse_duration)]  # a wait that may be zero: "at once"
Size = Annotated[int, BeforeValidator(parse_size)]
Percent = Annotated[float, Field(ge=0, le=100)]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=100)]
# A restart's node may be the failing entity's own: `node: "{node}"` (see RestartPolicy.for_entity).
NodeOrTemplate = Annotated[str, Field(pattern=r"^([A-Za-z0-9][A-Za-z0-9_.:@-]*|\{node\})$", max_length=100)]
PLACEHOLDERS = ("{entity}", "{node}")


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently disable a check. NaN and infinity too."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Level(Strict):
    """A warning and a critical limit, in percent unless said otherwise. `null` turns it off."""

    warning: Annotated[float, Field(ge=0, le=1000)] | None = None
    critical: Annotated[float, Field(ge=0, le=1000)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Level:
        if self.warning is not None and self.critical is not None and self.warning > self.critical:
            raise ValueError(f"warning ({self.warning}) is above critical ({self.critical})")
        return self


class Thresholds(Strict):
    """Resource limits; the defaults are Cluster AI's (`.env`: DISK_*, MEM_*, CPU_CRIT_THRESHOLD)."""

    cpu: Level = Level(warning=80, critical=90)
    memory: Level = Level(warning=85, critical=95)
    disk: Level = Level(warning=80, critical=90)
    load: Level = Level()  # load average per CPU; off unless set
    gpu_utilization: Level = Level()
    gpu_memory: Level = Level(warning=90, critical=98)
    gpu_temperature: Level = Level(warning=80, critical=90)  # degrees Celsius

    @model_validator(mode="after")
    def _percents(self) -> Thresholds:
        for resource in ("cpu", "memory", "disk", "gpu_utilization", "gpu_memory"):
            level = getattr(self, resource)
            for which in ("warning", "critical"):
                value = getattr(level, which)
                if value is not None and value > 100:
                    raise FieldError((resource, which), f"{value:g} is above 100 (percent)")
        return self


def _worker_thresholds() -> Thresholds:
    # Cluster AI's worker check: unhealthy at CPU > 90, memory > 95, disk > 95.
    return Thresholds(
        cpu=Level(warning=80, critical=90),
        memory=Level(warning=85, critical=95),
        disk=Level(warning=85, critical=95),
    )


Argv = Annotated[list[str], Field(min_length=1)]


class ComposeTarget(Strict):
    project: str
    service: str
    file: str | None = None  # docker compose -f FILE


class DaskWorkerTarget(Strict):
    """Restart a named worker on its node, as Cluster AI did by hand: stop it, start it again."""

    node: NodeOrTemplate | None = None  # where it runs (over SSH); none: this machine
    name: str  # the worker's --name, to find its process (matched exactly)
    command: Argv  # how to start it, e.g. [dask, worker, tcp://10.0.0.1:8786, --name, w1]


_ACTIONS = ("docker", "compose", "systemd", "supervisor", "command", "dask_worker")
DEFAULT_VERIFY = 60.0  # the least a restart is given to come up when verify_timeout is not set
ONE_ENTITY = ("http", "tcp", "openwebui")  # kinds whose only entity is the check itself


def _fill(value: Any, entity: str, node: str) -> Any:
    """Plain replacement, not str.format: a command's own braces (awk, JSON) stay as they are."""
    if isinstance(value, str):
        return value.replace("{entity}", entity).replace("{node}", node)
    if isinstance(value, list):
        return [_fill(v, entity, node) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, entity, node) for k, v in value.items()}
    return value


class RestartPolicy(Strict):
    """One restart action and the limits around it (Monit's `if N restarts within M cycles`).

    `{entity}` (the failing entity's own name: `w2` for `dask/w2`) and `{node}` (its node) in the
    action make it act on the one entity that failed, with a budget of its own."""

    docker: str | None = None  # container name (Cluster AI's matching)
    compose: ComposeTarget | None = None
    systemd: str | None = None  # unit name
    supervisor: str | None = None  # program name
    command: Argv | None = None
    dask_worker: DaskWorkerTarget | None = None
    stop: Argv | None = None  # a command restart: how to stop the old instance before `command` starts one
    stop_timeout: Duration = 10.0  # for `stop`, and for the old instance to be gone after it
    node: NodeOrTemplate | None = None  # run systemd/command over SSH on this node
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    window: Duration = 600.0
    backoff: Duration = 5.0  # delay before the second attempt; doubles after each
    timeout: Duration = 30.0  # for the action itself
    verify_timeout: Duration | None = None  # re-probe until healthy or this long; default: learnt (see healer)
    stable_for: Duration = 30.0  # healthy this long before the budget comes back (a blip is no recovery)
    grace: Delay = 0.0  # wait before the first attempt (let the service's own manager try first)
    dry_run: bool = False
    supervisor_url: str = "http://127.0.0.1:9001/RPC2"
    docker_socket: str | None = None  # default: the docker check's socket, else /var/run/docker.sock

    @model_validator(mode="after")
    def _one_action(self) -> RestartPolicy:
        chosen = [a for a in _ACTIONS if getattr(self, a) is not None]
        if len(chosen) != 1:
            found = f"found {', '.join(chosen)}" if chosen else "found none"
            raise ValueError(f"needs exactly one action of {', '.join(_ACTIONS)} ({found})")
        if self.stop is not None and self.command is None:
            raise FieldError(("stop",), "`stop` goes with a `command` restart (the other actions stop by themselves)")
        return self

    @property
    def action(self) -> str:
        return next(a for a in _ACTIONS if getattr(self, a) is not None)

    @property
    def target(self) -> str:
        """What the action touches: never two actions at once on one target."""
        value = getattr(self, self.action)
        if isinstance(value, ComposeTarget):
            value = f"{value.project}/{value.service}"
        elif isinstance(value, DaskWorkerTarget):
            value = f"{value.node or 'local'}/{value.name}"
        elif isinstance(value, list):
            value = " ".join(value)
        where = f"@{self.node}" if self.node else ""
        return f"{self.action}:{value}{where}"

    @property
    def limit(self) -> float:
        """The whole action's time: `stop` and the old instance's going each get stop_timeout, then the start."""
        return self.timeout + (2 * self.stop_timeout if self.stop else 0.0)

    def uses(self, placeholder: str) -> bool:
        return placeholder in repr(self.model_dump(include={*_ACTIONS, "stop", "node"}))

    @property
    def templated(self) -> bool:
        """Acts on one entity (`{entity}`/`{node}` in what it touches)."""
        return any(self.uses(p) for p in PLACEHOLDERS)

    def for_entity(self, entity: str, node: str) -> RestartPolicy:
        """This policy acting on one entity: its placeholders filled (no-op for a plain policy)."""
        if not self.templated:
            return self
        fields = {*_ACTIONS, "stop", "node"}
        filled = _fill(self.model_dump(include=fields, exclude_none=True), entity, node)
        return self.model_copy(update={k: getattr(RestartPolicy.model_validate(filled), k) for k in filled})

    def how(self) -> str:
        """What this restart does, as a person would type it (for hints and banners)."""
        where = f" on {self.node}" if self.node else ""
        if self.docker is not None:
            return f"`docker restart {self.docker}`"
        if self.compose is not None:
            file = f" -f {self.compose.file}" if self.compose.file else ""
            return f"`docker compose -p {self.compose.project}{file} up -d {self.compose.service}`{where}"
        if self.systemd is not None:
            return f"`systemctl restart {self.systemd}`{where}"
        if self.supervisor is not None:
            return f"`supervisorctl restart {self.supervisor}`"
        if self.dask_worker is not None:
            place = f" on {self.dask_worker.node}" if self.dask_worker.node else ""
            return f"`{shlex.join(self.dask_worker.command)}`{place}"
        assert self.command is not None
        stop = f"`{shlex.join(self.stop)}`, then " if self.stop else ""
        return f"{stop}`{shlex.join(self.command)}`{where}"


def _one_or_many(value: Any) -> Any:
    """`restart:` is one action, or a ladder of them (each step tried when the one before did not help)."""
    return [value] if isinstance(value, dict) else value


Restart = Annotated[list[RestartPolicy], BeforeValidator(_one_or_many), Field(min_length=1, max_length=10)]


class CheckBase(Strict):
    name: Name
    interval: Duration | None = None
    retry_interval: Duration | None = None  # after a soft failure (Nagios' word); default interval / 10
    timeout: Duration | None = None
    node: Name | None = None  # the node this service runs on (for dependencies and filters)
    fall: Annotated[int, Field(ge=1, le=100)] | None = None
    rise: Annotated[int, Field(ge=1, le=100)] | None = None
    depends_on: list[Name] = []
    restart: Restart | None = None  # one action, or a ladder: [{supervisor: ..}, {command: [..]}, ..]

    def fix_hint(self, entity: str | None = None) -> str | None:
        """What this check's own restart would do, for a message's hint (`{entity}` filled when given)."""
        if not self.restart:
            return None
        step = self.restart[0]
        if step.templated:
            if entity is None:
                return None
            step = step.for_entity(entity, self.node or "local")
        return step.how()


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    shown = repr(value) if len(value) <= 80 else repr(value[:77] + "...")
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s]+", value):
        raise ValueError(f"invalid URL {shown} (expected e.g. {schemes[0]}://127.0.0.1:8080)")
    scheme = value.split("://", 1)[0].lower()
    if scheme not in schemes:
        raise ValueError(f"URL scheme {scheme[:20]!r} not supported here (use {' or '.join(schemes)})")
    try:  # the port, as the client will read it: a number from 0 to 65535
        urllib.parse.urlsplit(value).port  # noqa: B018 - evaluated for its check
    except ValueError as exc:
        raise ValueError(f"invalid URL {shown}: {exc}") from None
    return value


HttpUrl = Annotated[str, BeforeValidator(lambda v: _check_url(str(v), ("http", "https")))]


class HttpCheck(CheckBase):
    kind: Literal["http"]
    url: HttpUrl
    method: Literal["GET", "HEAD", "POST", "PUT"] = "GET"
    headers: dict[str, str] = {}
    body: str | None = None
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] | None = None  # default: any 2xx or 3xx
    body_contains: str | None = None
    expect_json: dict[str, Any] = {}  # dotted path -> expected value
    latency_warning: Duration | None = None
    latency_critical: Duration | None = None
    tls_verify: bool = True
    ca_file: str | None = None
    cert_days_warning: Annotated[int, Field(ge=0, le=3650)] = 14
    cert_days_critical: Annotated[int, Field(ge=0, le=3650)] = 7
    max_body: Size = 1024 * 1024

    @field_validator("expect_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value


class TcpCheck(CheckBase):
    kind: Literal["tcp"]
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)]
    latency_warning: Duration | None = None


class ExpectedWorker(Strict):
    """A Dask worker that must be connected: matched by worker name or by host."""

    name: str
    host: str | None = None


class DaskCheck(CheckBase):
    kind: Literal["dask"]
    scheduler: Annotated[str, BeforeValidator(lambda v: _check_url(str(v), ("tcp", "tls")))] = "tcp://127.0.0.1:8786"
    dashboard: HttpUrl | None = None  # default: the scheduler's host, port 8787
    min_workers: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    expect_workers: list[ExpectedWorker] = []  # a plain string is a name or a host

    @field_validator("expect_workers", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v, "host": v} if isinstance(v, str) else v for v in value]
        return value

    heartbeat_warning: Duration = 5.0
    heartbeat_critical: Duration = 10.0
    memory_warning: Percent = 80.0  # percent of the worker's memory limit (Dask pauses at 80)
    memory_critical: Percent = 95.0  # Dask's nanny kills the worker at 95
    max_body: Size = 8 * 1024 * 1024
    # Tasks executing on a worker and none finishing this long (its heartbeat fine): a wedged worker,
    # a warning naming the task prefix. Off by default: how long a task may run is the workload's.
    stuck_after: Duration | None = None

    @model_validator(mode="after")
    def _heartbeats(self) -> DaskCheck:
        if self.heartbeat_warning > self.heartbeat_critical:
            raise ValueError("heartbeat_warning is above heartbeat_critical")
        return self

    @property
    def dashboard_url(self) -> str:
        if self.dashboard:
            return self.dashboard.rstrip("/")
        host = self.scheduler.split("://", 1)[1].rsplit(":", 1)[0]
        return f"http://{host}:8787"

    @property
    def scheduler_host_port(self) -> tuple[str, int]:
        url = urllib.parse.urlsplit(self.scheduler)  # its port was checked when the config was loaded
        return url.hostname or "", url.port or 8786


class DockerCheck(CheckBase):
    kind: Literal["docker"]
    socket: str = "/var/run/docker.sock"
    containers: list[str] = []
    restart_window: Duration = 600.0  # a restart within this window counts as "rising"

    @field_validator("socket", mode="before")
    @classmethod
    def _strip_scheme(cls, value: Any) -> Any:
        return value[len("unix://") :] if isinstance(value, str) and value.startswith("unix://") else value


class GenerateProbe(Strict):
    """Opt-in: a real generation, to see that the model answers and how fast.

    A few tokens, not one: Ollama times generation from the first token on (the first comes out of
    the prompt's own pass), so a one-token answer proves the model answers but has no tokens/s. The
    prompt asks for a steady run of tokens, so each probe measures about the same work."""

    model: str
    prompt: str = "Count from 1 to 20, separated by spaces."
    num_predict: Annotated[int, Field(ge=1, le=4096)] = 8  # tokens asked for; tokens/s needs 2 or more
    timeout: Duration = 60.0
    latency_warning: Duration = 10.0
    # tokens/s below this share of the model's recent median (its own baseline) is a warning
    tokens_drop_warning: Annotated[float, Field(gt=0, lt=1)] = 0.5


class OllamaCheck(CheckBase):
    kind: Literal["ollama"]
    url: HttpUrl = "http://127.0.0.1:11434"
    expect_models: list[str] = []
    generate: GenerateProbe | None = None
    # a model loaded wholly on CPU is a warning too (partly on CPU always is): for a machine with a GPU
    expect_gpu: bool = False
    max_body: Size = 8 * 1024 * 1024


class OpenWebUICheck(CheckBase):
    kind: Literal["openwebui"]
    url: HttpUrl = "http://127.0.0.1:3000"
    check_db: bool = True
    max_body: Size = 1024 * 1024
    # Its DATA_DIR, where the probe runs: a missing or unreadable webui.db is critical (/health/db only
    # pings the connection already open; the next restart would start on a new, empty database).
    data_dir: str | None = None
    # Its OLLAMA_BASE_URL (its public /api/config does not tell): an ollama check at that URL becomes
    # this check's dependency. Default: http://127.0.0.1:11434, for an ollama check on the same node.
    ollama_url: HttpUrl | None = None

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = os.path.expanduser(value)
        if not os.path.isabs(path):
            raise ValueError(f"data_dir must be an absolute path (got {value[:80]!r})")
        return os.path.normpath(path)


class NodeCheck(CheckBase):
    """This machine's resources (and its NVIDIA GPUs when there are any)."""

    kind: Literal["node"]
    thresholds: Thresholds | None = None  # default: the top-level thresholds
    disks: list[str] = []  # mount points; default: every local disk
    gpus: bool = True
    cpu_sample: Duration = 0.5
    expect_gpus: Annotated[int, Field(ge=1, le=1024)] | None = None  # NVML listing fewer: critical
    xid_window: Duration = 3600.0  # each GPU's XID errors are counted over this window

    @model_validator(mode="after")
    def _gpus_expected(self) -> NodeCheck:
        if self.expect_gpus is not None and not self.gpus:
            raise ValueError("expect_gpus needs gpus: true (with gpus: false no GPU is looked at)")
        return self


Check = Annotated[
    HttpCheck | TcpCheck | DaskCheck | DockerCheck | OllamaCheck | OpenWebUICheck | NodeCheck,
    Field(discriminator="kind"),
]
CHECK_KINDS: dict[str, type[CheckBase]] = {
    "http": HttpCheck,
    "tcp": TcpCheck,
    "dask": DaskCheck,
    "docker": DockerCheck,
    "ollama": OllamaCheck,
    "openwebui": OpenWebUICheck,
    "node": NodeCheck,
}


class SSHOptions(Strict):
    user: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    key: str | None = None  # default: the user's standard keys (~/.ssh/id_*)
    passphrase: str | None = None  # use ${ENV}
    known_hosts: str | None = None  # default: ~/.ssh/known_hosts
    insecure_ignore_host_key: bool = False  # explicit opt-out; logged loudly
    connect_timeout: Duration = 5.0

    @field_validator("key", "known_hosts")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = os.path.expanduser(value)
        if not os.path.isfile(path):
            raise ValueError(f"file {value!r} does not exist")
        if not os.access(path, os.R_OK):
            raise ValueError(f"file {value!r} is not readable by this user")
        return path


class Node(Strict):
    """A remote machine (Linux server or Termux phone): reached over SSH, or running an agent that pushes."""

    name: Name
    host: str | None = None  # for SSH; an agent's node needs none (it connects to the monitor)
    agent: bool = False  # `clusterwatch agent run` on the node runs its checks and pushes them here
    agent_timeout: Duration | None = None  # silent this long: the node is critical (default 3 intervals)
    ssh: SSHOptions = SSHOptions()
    termux: bool | None = None  # default: guessed from port 8022 / a u0_a user
    thresholds: Thresholds | None = None  # default: node_thresholds
    expect_dask_worker: bool = True
    battery_warning: Percent = 20.0
    battery_critical: Percent = 10.0
    interval: Duration | None = None
    retry_interval: Duration | None = None
    timeout: Duration | None = None
    fall: Annotated[int, Field(ge=1, le=100)] | None = None
    rise: Annotated[int, Field(ge=1, le=100)] | None = None
    depends_on: list[Name] = []

    @model_validator(mode="after")
    def _reachable(self) -> Node:
        if not self.agent and not self.host:
            raise FieldError("host", "a node needs a host (for SSH), or `agent: true` (its agent pushes)")
        if self.agent_timeout is not None and not self.agent:
            raise FieldError("agent_timeout", "only for a node with `agent: true` (this one is reached over SSH)")
        return self

    @property
    def is_termux(self) -> bool:
        if self.termux is not None:
            return self.termux
        return self.ssh.port == 8022 or (self.ssh.user or "").startswith("u0_a")


class ClusterAIImport(Strict):
    """Cluster AI's own files, read as they are."""

    cluster_yaml: str | None = None
    nodes_list: str | None = None
    env_files: list[str] = []


def _default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/clusterwatch"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "clusterwatch")


class StoreOptions(Strict):
    """History in SQLite (WAL): nothing to install, survives kill -9. Or in PostgreSQL (`url`), which
    several monitors share: needed for high availability."""

    path: str = Field(default_factory=lambda: os.path.join(_default_state_dir(), "state.db"))
    # postgresql://user@host/db; the password from ${PGPASSWORD}, ~/.pgpass or ${VAR} here (kept secret)
    url: str | None = None
    raw_per_check: Annotated[int, Field(ge=10, le=1_000_000)] = 500  # recent raw observations kept per entity
    raw_max_age: Duration = 2 * 86400.0
    minute_rollups_max_age: Duration = 14 * 86400.0
    hour_rollups_max_age: Duration = 400 * 86400.0
    events_max_age: Duration = 180 * 86400.0

    @field_validator("url")
    @classmethod
    def _postgres(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (leave it out for SQLite at `path`)")
        return value


class HAOptions(Strict):
    """Several monitors on one PostgreSQL store form a group: all probe, one (the lease holder) acts."""

    enabled: bool = False
    lease: Annotated[Duration, Field(ge=2.0, le=600.0)] = 15.0  # how long a silent leader keeps the lease
    node_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)


class LogOptions(Strict):
    dir: str | None = None  # Cluster AI-style log lines go to DIR/clusterwatch.log; none: stderr only
    max_bytes: Size = 10 * 1024 * 1024
    backups: Annotated[int, Field(ge=0, le=100)] = 5
    level: Literal["debug", "info", "warning", "error"] = "info"


class FlappingOptions(Strict):
    """Nagios' method: weighted share of state changes over the last 21 observations."""

    high: Percent = 30.0  # starts flapping above this
    low: Percent = 15.0  # stops flapping below this

    @model_validator(mode="after")
    def _ordered(self) -> FlappingOptions:
        if self.low > self.high:
            raise ValueError("low is above high")
        return self


class HealingOptions(Strict):
    enabled: bool = True
    dry_run: bool = False  # log what would be done, do nothing
    # No restart this long after the monitor starts (Monit's `start delay`): services started with it at boot
    # are given time to come up. 0: carry on at once (a monitor restarted after a crash heals what is down).
    start_delay: Delay = 0.0


SEVERITIES = ("info", "warning", "critical")
Severity = Literal["info", "warning", "critical"]
MATCH_KEYS = ("check", "entity", "kind", "node", "severity")


class Route(Strict):
    """Where notifications go: globs on check, entity, kind and node; the first matching route wins."""

    match: dict[Literal["check", "entity", "kind", "node", "severity"], str] = {}
    channels: list[str] = Field(min_length=1)
    min_severity: Severity = "warning"
    continue_: bool = Field(False, alias="continue")  # also try the routes after this one


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindow(Strict):
    """Weekly times when matching notifications are held back (events are still recorded)."""

    match: dict[Literal["check", "entity", "kind", "node", "severity"], str] = {}
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = list(DAYS)
    start: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    end: Annotated[str, Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")]
    reason: str = "maintenance window"


class Heartbeat(Strict):
    """A dead man's switch: ping an outside URL (healthchecks.io style) while the monitor lives."""

    url: HttpUrl
    every: Duration = 60.0
    timeout: Duration = 10.0


class AlertOptions(Strict):
    channels: dict[Name, str] = {}  # name -> Apprise URL
    routes: list[Route] = []  # none: every channel, critical only
    group_wait: Delay = 10.0
    repeat_interval: Duration = 4 * 3600.0
    max_age: Duration = 24 * 3600.0  # undelivered this long: given up, with an error
    heartbeat: Heartbeat | None = None
    maintenance: list[MaintenanceWindow] = []
    dashboard_url: str | None = None  # linked from every notification

    @model_validator(mode="after")
    def _usable_channels(self) -> AlertOptions:
        if self.channels:
            from clusterwatch.alerting.channels import check_url

            for name, url in self.channels.items():
                problem = check_url(url)
                if problem:
                    raise BadChannel(name, problem)
        return self

    @model_validator(mode="after")
    def _known_channels(self) -> AlertOptions:
        for index, route in enumerate(self.routes):
            for position, channel in enumerate(route.channels):
                if channel not in self.channels:
                    raise UnknownChannel(index, position, channel, sorted(self.channels))
        return self


class WebTLS(Strict):
    """HTTPS for the dashboard, the API and agents' pushes: a PEM certificate (chain) and its key."""

    cert: str
    key: str

    @field_validator("cert", "key")
    @classmethod
    def _readable(cls, value: str) -> str:
        path = os.path.expanduser(value)
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ValueError(f"file {value!r} does not exist or is not readable")
        return path


class WebAuth(Strict):
    read: bool = False  # require the token for reading too


class StatusPage(Strict):
    """`/status`: a read-only page for the people who use the cluster: the chosen checks' state, uptime
    bars, open incidents and maintenance windows coming up, and nothing else of the monitor.

    `public: true` opens it (and only it) to anyone who can reach the web; everything else then needs
    the token, for reading too. Without `public`, it needs the token like any other page."""

    title: str = Field("Service status", min_length=1, max_length=200)
    checks: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)  # globs on check names
    public: bool = False


class WebOptions(Strict):
    """Dashboard, JSON API and /metrics, served by `clusterwatch run`."""

    enabled: bool = True
    listen: str = "127.0.0.1:9877"
    token: str | None = None  # write ${ENV}; or token_file
    token_file: str | None = None
    auth: WebAuth = WebAuth()
    tls: WebTLS | None = None
    status_page: StatusPage | None = None

    @field_validator("listen")
    @classmethod
    def _hostport(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not re.fullmatch(r"[^\s/]+", host) or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
            raise ValueError(f"listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9877")
        return value

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = os.path.expanduser(value) if "\0" not in value else value
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ValueError(f"token file {value!r} does not exist or is not readable")
        try:
            token = read_text(path)
        except FileProblem as exc:
            raise ValueError(f"token file {value!r}: {exc.message}") from None
        if not token.strip():
            raise ValueError(f"token file {value!r} is empty")
        return path

    @model_validator(mode="after")
    def _no_open_door(self) -> WebOptions:
        if self.enabled and not self.loopback and not (self.token or self.token_file):
            raise FieldError(
                "listen",
                f"refusing to listen on {self.listen} without a token: anyone who can reach it could "
                "change state; set web.token_file (or web.token: ${ENV}), or listen on 127.0.0.1",
            )
        return self

    @model_validator(mode="after")
    def _public_status_page(self) -> WebOptions:
        if self.status_page is not None and self.status_page.public and not (self.token or self.token_file):
            raise FieldError(
                ("status_page", "public"),
                "a public status page closes everything else behind the token, and none is configured: "
                "set web.token_file (or web.token: ${ENV})",
            )
        return self

    @property
    def read_needs_token(self) -> bool:
        """Whether reading (pages, API, /metrics) needs the token: `auth.read`, or a public status page."""
        return self.auth.read or (self.status_page is not None and self.status_page.public)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    def resolve_token(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file:
            return read_text(self.token_file).strip()
        return None


class Config(Strict):
    interval: Duration = 30.0
    retry_interval: Duration | None = None  # default: a tenth of each check's interval (at least 100ms)
    timeout: Duration = 5.0
    fall: Annotated[int, Field(ge=1, le=100)] = 2
    rise: Annotated[int, Field(ge=1, le=100)] = 2
    concurrency: Annotated[int, Field(ge=1, le=10000)] = 200
    store: StoreOptions = Field(default_factory=StoreOptions)
    ha: HAOptions = Field(default_factory=HAOptions)
    logs: LogOptions = LogOptions()
    flapping: FlappingOptions = FlappingOptions()
    healing: HealingOptions = HealingOptions()
    alerts: AlertOptions = AlertOptions()
    web: WebOptions = WebOptions()
    thresholds: Thresholds = Thresholds()
    node_thresholds: Thresholds = Field(default_factory=_worker_thresholds)
    ssh: SSHOptions = SSHOptions()  # defaults for every node's ssh
    cluster_ai: ClusterAIImport | None = None
    checks: list[Check] = []
    nodes: list[Node] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: dict[str, int] = {}
        for index, check in enumerate(self.checks):
            if check.name in seen:
                raise DuplicateName("checks", index, check.name, seen[check.name])
            seen[check.name] = index
        node_names: dict[str, int] = {}
        for index, node in enumerate(self.nodes):
            if node.name in node_names:
                raise DuplicateName("nodes", index, node.name, node_names[node.name])
            node_names[node.name] = index
        for index, check in enumerate(self.checks):
            if check.node and check.node not in node_names and check.node != "local":
                raise UnknownNode(index, check.node, sorted(node_names))
            if check.name in node_names:
                raise DuplicateName("checks", index, check.name, node_names[check.name], "nodes")
            for step_index, step in enumerate(check.restart or []):
                if step.uses("{entity}") and check.kind in ONE_ENTITY:
                    raise FieldError(
                        ("checks", index, "restart", step_index),
                        f"{{entity}} names one of a check's entities (a Dask worker, a container, a model): "
                        f"a {check.kind} check has only itself — name the target as it is",
                    )
                for key, node in (
                    ("node", step.node),
                    ("dask_worker", step.dask_worker and step.dask_worker.node),
                ):
                    if not node or node == "{node}":
                        continue
                    if node not in node_names:
                        raise UnknownNode(index, node, sorted(node_names), ("restart", step_index, key))
                    if node != check.node and self.nodes[node_names[node]].agent:
                        raise FieldError(
                            ("checks", index, "restart", step_index, key),
                            f"{node} has an agent: a restart there is run by its agent, for a check on that node "
                            f"(set this check's node: {node})",
                        )
        everything = set(seen) | set(node_names)
        for section, items in (("checks", self.checks), ("nodes", self.nodes)):
            for index, item in enumerate(items):
                for position, root in enumerate(item.depends_on):
                    if root not in everything:
                        raise UnknownDependency(section, index, position, root, sorted(everything))
        self._no_cycles()
        if self.ha.enabled and not self.store.url:
            raise FieldError(
                ("ha", "enabled"), "a group of monitors shares one PostgreSQL store: set store.url as well"
            )
        return self

    def _no_cycles(self) -> None:
        """Depth-first, with a stack of its own: a chain of thousands of dependencies is no recursion limit."""
        graph = {c.name: list(c.depends_on) + ([c.node] if c.node and c.node != "local" else []) for c in self.checks}
        graph.update({n.name: list(n.depends_on) for n in self.nodes})
        done: set[str] = set()
        for start in graph:
            if start in done:
                continue
            trail, on_trail = [start], {start}
            stack = [iter(graph[start])]
            while stack:
                root = next(stack[-1], None)
                if root is None:
                    done.add(trail[-1])
                    on_trail.discard(trail.pop())
                    stack.pop()
                elif root in on_trail:
                    section, index = self._locate(trail[-1])
                    raise DependencyCycle(section, index, [*trail[trail.index(root) :], root])
                elif root not in done:
                    trail.append(root)
                    on_trail.add(root)
                    stack.append(iter(graph.get(root, [])))

    def _locate(self, name: str) -> tuple[str, int]:
        for index, check in enumerate(self.checks):
            if check.name == name:
                return "checks", index
        return "nodes", next(i for i, n in enumerate(self.nodes) if n.name == name)

    @model_validator(mode="after")
    def _openwebui_needs_its_ollama(self) -> Config:
        """Open WebUI serves nothing useful without the Ollama at its OLLAMA_BASE_URL: when both are
        checked and the openwebui check names no `depends_on` of its own, that ollama check is its root
        (one incident when Ollama fails, not two). Never at the price of a cycle."""
        ollamas = [c for c in self.checks if isinstance(c, OllamaCheck)]
        for check in self.checks if ollamas else []:
            if not isinstance(check, OpenWebUICheck) or "depends_on" in check.model_fields_set:
                continue
            wanted = check.ollama_url or DEFAULT_OLLAMA_URL
            roots = [o.name for o in ollamas if _same_service(wanted, check.node, o.url, o.node)]
            if not roots:
                continue
            check.depends_on = roots
            try:
                self._no_cycles()
            except DependencyCycle:
                check.depends_on = []
        return self


DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"  # Open WebUI's own default OLLAMA_BASE_URL, outside Docker
_LOOPBACK = re.compile(r"^(localhost|127(\.\d{1,3}){3}|::1|0\.0\.0\.0)$")


def _same_service(url: str, node: str | None, other: str, other_node: str | None) -> bool:
    """Two URLs name one service: same scheme, host and port; a loopback host only on one node."""
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(other)
    if a.scheme.lower() != b.scheme.lower():
        return False
    default = 443 if a.scheme.lower() == "https" else 80
    if (a.port or default) != (b.port or default):
        return False
    host, other_host = (a.hostname or "").lower(), (b.hostname or "").lower()
    if _LOOPBACK.match(host) and _LOOPBACK.match(other_host):
        return (node or "local") == (other_node or "local")
    return host == other_host


class DuplicateName(ValueError):
    def __init__(self, section: str, index: int, name: str, first: int, other: str | None = None) -> None:
        super().__init__(f"duplicate name {name!r}: {other or section}[{first}] already has it")
        self.loc: tuple[Any, ...] = (section, index, "name")


class UnknownNode(ValueError):
    def __init__(self, index: int, node: str, known: list[str], where: tuple[Any, ...] = ("node",)) -> None:
        names = ", ".join(known) or "none configured"
        super().__init__(f"unknown node {node!r} (nodes: {names})")
        self.loc = ("checks", index, *where)


class UnknownDependency(ValueError):
    def __init__(self, section: str, index: int, position: int, root: str, known: list[str]) -> None:
        import difflib

        hint = difflib.get_close_matches(root, known, n=1)
        super().__init__(
            f"depends on unknown check or node {root!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
        self.loc = (section, index, "depends_on", position)


class FieldError(ValueError):
    """A model-level rule that is about one field: the error names that field's line."""

    def __init__(self, field: str | tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = field if isinstance(field, tuple) else (field,)


class BadChannel(ValueError):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(problem)
        self.loc = ("channels", name)


class UnknownChannel(ValueError):
    def __init__(self, index: int, position: int, channel: str, known: list[str]) -> None:
        super().__init__(f"unknown channel {channel!r} (channels: {', '.join(known) or 'none configured'})")
        self.loc = ("routes", index, "channels", position)


class DependencyCycle(ValueError):
    def __init__(self, section: str, index: int, cycle: list[str]) -> None:
        if len(cycle) > 9:  # a cycle through thousands of checks: its ends say enough
            cycle = [*cycle[:4], f"... {len(cycle) - 8} more ...", *cycle[-4:]]
        super().__init__(f"dependency cycle: {' -> '.join(cycle)}")
        self.loc = (section, index, "depends_on")
