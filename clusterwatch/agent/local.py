"""What the agent runs on its node: a runnable Config from the monitor's AgentConfig, and the node's
own report taken with psutil (no SSH), judged by the very code that judges an SSH node.

The report is the dict `clusterwatch.probes.ssh.parse_report` makes of REMOTE_SCRIPT's output, so
`ssh.judge` grades it with the same thresholds and words: a phone with an agent reads exactly like
a phone reached over SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
from pydantic import TypeAdapter, ValidationError

from clusterwatch.agent.protocol import AgentConfig
from clusterwatch.config.schema import NAME_PATTERN, Check, CheckBase, Config, Node, RestartPolicy
from clusterwatch.model import Group, Observation, Status, one_line
from clusterwatch.probes.ssh import judge

log = logging.getLogger("clusterwatch.agent")

# What a node's own config may set from the monitor's defaults; the rest is the agent's (no web, its
# own store) or the monitor's alone (alerts, HA, SSH to other nodes).
DEFAULT_KEYS = (
    "interval",
    "retry_interval",
    "timeout",
    "fall",
    "rise",
    "concurrency",
    "flapping",
    "healing",
    "thresholds",
    "node_thresholds",
)
# The same processes REMOTE_SCRIPT's `pgrep -f` looks for.
DASK_WORKER = re.compile(r"dask(-worker| worker)|distributed[.]cli[.]dask_worker")
CPU_SAMPLE = 0.5  # seconds between the two CPU samples, as REMOTE_SCRIPT sleeps
BATTERY_TIMEOUT = 5.0
DISK_TIMEOUT = 5.0
_CHECK = TypeAdapter(Check)


@dataclass
class Broken:
    """A check the monitor sent that cannot run on this node: it reports `unknown` every interval."""

    name: str
    kind: str
    error: str
    node: str | None
    interval: float | None = None

    def observation(self) -> Observation:
        return Observation(
            name=self.name,
            kind=self.kind,
            target="",
            status=Status.UNKNOWN,
            message=f"cannot run on this node: {self.error}",
            check=self.name,
            group=Group.SERVICES,
            node=self.node,
        )


@dataclass
class Built:
    config: Config
    node: Node
    broken: dict[str, Broken] = field(default_factory=dict)
    # The monitor's name of each restart target -> the name it has here (the action runs locally,
    # so `@node` is gone): the monitor's budgets are keyed by the former.
    targets: dict[str, str] = field(default_factory=dict)


class ConfigProblem(ValueError):
    """The AgentConfig as a whole cannot run here (its node or its defaults): nothing to run."""


def _error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', '')}" if where else str(err.get("msg", "")))
        return one_line("; ".join(parts), 300)
    return one_line(str(exc) or type(exc).__name__, 300)


def _localize_restart(restart: Any, node: str) -> tuple[Any, str | None]:
    """The restart as it runs here: an action the monitor would run over SSH on this node runs locally.
    Returns the restart (a ladder cut where a step needs another node, which this agent cannot reach;
    None when even its first does) and why not."""
    steps = [restart] if isinstance(restart, dict) else restart
    if not isinstance(steps, list):
        return restart, None
    local: list[Any] = []
    for step in steps:
        here, why_not = _localize_step(step, node)
        if here is None:
            return (local or None), why_not
        local.append(here)
    return local, None


def _localize_step(step: Any, node: str) -> tuple[Any, str | None]:
    if not isinstance(step, dict):
        return step, None
    step = dict(step)
    if step.get("node") is not None:
        if step["node"] not in (node, "{node}"):
            return None, f"its restart runs on node {step['node']!r}, not here"
        step["node"] = None
    worker = step.get("dask_worker")
    if isinstance(worker, dict) and worker.get("node") is not None:
        if worker["node"] not in (node, "{node}"):
            return None, f"its restart runs on node {worker['node']!r}, not here"
        step["dask_worker"] = {**worker, "node": None}
    return step, None


def local_policy(policy: dict[str, Any]) -> RestartPolicy:
    """A commanded restart's policy, to run here: no `node` (that would be SSH), however it was sent."""
    data = dict(policy)
    data["node"] = None
    if isinstance(data.get("dask_worker"), dict):
        data["dask_worker"] = {**data["dask_worker"], "node": None}
    return RestartPolicy.model_validate(data)


def cannot_run(check: CheckBase) -> str | None:
    """What keeps a valid check from running on this node: files it names that are not here."""
    ca_file = getattr(check, "ca_file", None)
    if ca_file:
        path = os.path.expanduser(ca_file)
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            return f"ca_file {ca_file!r} does not exist or is not readable here"
    return None


def build_config(agent: AgentConfig, state_dir: str) -> Built:
    """Defaults + this node + every check that can run here, each validated on its own: one check
    that cannot run becomes a `Broken` (reported as unknown), never the end of the others."""
    node_data = {k: v for k, v in agent.node.items() if k not in ("host", "ssh")}
    node_data["agent"] = True
    try:
        node = Node.model_validate(node_data)
    except ValidationError as exc:
        raise ConfigProblem(f"the node from the monitor is not valid here: {_error(exc)}") from None
    base: dict[str, Any] = {k: copy.deepcopy(v) for k, v in agent.defaults.items() if k in DEFAULT_KEYS}
    base.update(
        web={"enabled": False},
        store={"path": os.path.join(state_dir, "heal.db")},
        nodes=[node],
    )
    try:
        Config.model_validate({**base, "checks": []})
    except ValidationError as exc:
        raise ConfigProblem(f"the defaults from the monitor are not valid here: {_error(exc)}") from None

    broken: dict[str, Broken] = {}
    targets: dict[str, str] = {}
    valid: list[CheckBase] = []
    names = {c.get("name") for c in agent.checks if isinstance(c, dict)}
    for raw in agent.checks:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            log.warning("a check from the monitor without a name was left out: %s", one_line(repr(raw), 200))
            continue
        if not re.fullmatch(NAME_PATTERN, raw["name"]) or len(raw["name"]) > 100:
            # Not even `unknown` can be reported for it: a round names its check, and the name is refused.
            log.warning("a check from the monitor with an unusable name was left out: %r", raw["name"][:100])
            continue
        data = dict(raw)
        name, kind = data["name"], str(data.get("kind", "unknown"))[:50]
        # Roots on other nodes are the monitor's to judge: here a check depends only on what runs here.
        if isinstance(data.get("depends_on"), list):
            data["depends_on"] = [r for r in data["depends_on"] if r in names or r == node.name]
        monitor_targets = _targets(data.get("restart"))
        data["restart"], why_not = _localize_restart(data.get("restart"), node.name)
        if why_not:
            log.warning("check %s: not restarted by this agent: %s", name, why_not)
        interval = _interval(data.get("interval"))
        try:
            check = _CHECK.validate_python(data)
        except ValidationError as exc:
            broken[name] = Broken(name, kind, _error(exc), node.name, interval)
            continue
        problem = cannot_run(check)
        if problem:
            broken[name] = Broken(name, kind, problem, node.name, interval)
            continue
        for monitor_target, step in zip(monitor_targets, check.restart or [], strict=False):
            if monitor_target:
                targets[monitor_target] = step.target
        valid.append(check)

    try:
        config = Config.model_validate({**base, "checks": valid})
    except ValidationError:
        # Something between checks (a name used twice, a dependency cycle): add them one by one and
        # leave out the ones the config cannot take.
        kept: list[CheckBase] = []
        for check in valid:
            try:
                Config.model_validate({**base, "checks": [*kept, check]})
            except ValidationError as exc:
                kind = str(getattr(check, "kind", "unknown"))
                broken[check.name] = Broken(check.name, kind, _error(exc), node.name, check.interval)
                continue
            kept.append(check)
        config = Config.model_validate({**base, "checks": kept})
    # A broken check is reported under its own name: not when that name is the node's or a running check's.
    taken = {c.name for c in config.checks} | {node.name}
    for name in [n for n in broken if n in taken]:
        log.warning("a second check named %s cannot run on this node and is left out: %s", name, broken.pop(name).error)
    return Built(config, config.nodes[0], broken, targets)


def _interval(value: Any) -> float | None:
    try:
        from clusterwatch.config.durations import positive_duration

        return float(positive_duration(value)) if value is not None else None
    except (ValueError, TypeError):
        return None


def _targets(restart: Any) -> list[str]:
    """The monitor's name of each step's target (a step it sent that is not valid here has none)."""
    steps = [restart] if isinstance(restart, dict) else restart if isinstance(restart, list) else []
    out = []
    for step in steps:
        try:
            out.append(RestartPolicy.model_validate(step).target)
        except ValidationError:
            out.append("")
    return out


# --- the node's own report -----------------------------------------------------------------------------


def _stat_line() -> str | None:
    """The aggregate `cpu` line of /proc/stat, in clock ticks, as REMOTE_SCRIPT's `head -n1 /proc/stat`."""
    try:
        t = psutil.cpu_times()
    except (OSError, RuntimeError, NotImplementedError):
        return None
    fields = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    ticks = [int(getattr(t, f, 0.0) * 100) for f in fields]
    return "cpu  " + " ".join(str(v) for v in ticks)


def _mount_of(path: str) -> str:
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _df(path: str) -> str | None:
    """`df -P PATH` as REMOTE_SCRIPT prints it: the mount point, then size, used and available in kB."""
    try:
        usage = psutil.disk_usage(path)
        mount = _mount_of(path)
    except OSError:
        return None
    return f"{mount} {usage.total // 1024} {usage.used // 1024} {usage.free // 1024}"


def dask_worker_running() -> bool:
    own = os.getpid()
    for process in psutil.process_iter(["pid", "cmdline"]):
        info = process.info
        if info.get("pid") == own or not info.get("cmdline"):
            continue
        if DASK_WORKER.search(" ".join(info["cmdline"])):
            return True
    return False


async def _battery() -> str | None:
    """Termux's `termux-battery-status` (exec, never a shell), bounded; None where there is none."""
    command = shutil.which("termux-battery-status")
    if command is None:
        return None
    process = await asyncio.create_subprocess_exec(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        async with asyncio.timeout(BATTERY_TIMEOUT):
            output, _ = await process.communicate()
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    return output[:4096].decode("utf-8", "replace").replace("\n", "")


async def node_report(home: str | None = None, sample: float = CPU_SAMPLE) -> dict[str, Any]:
    """The dict `parse_report` makes of REMOTE_SCRIPT's output, taken here with psutil."""
    home = home if home is not None else os.environ.get("HOME") or os.path.expanduser("~")
    report: dict[str, Any] = {"df": []}
    report["nproc"] = str(psutil.cpu_count() or os.cpu_count() or 1)
    battery = asyncio.ensure_future(_battery())
    try:
        first = _stat_line()
        if first is not None:
            await asyncio.sleep(sample)
            second = _stat_line()
            if second is not None:
                report["stat1"], report["stat2"] = first, second
        with contextlib.suppress(OSError):
            report["loadavg"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        with contextlib.suppress(OSError, RuntimeError):
            memory = psutil.virtual_memory()
            report["MemTotal"], report["MemAvailable"] = str(memory.total // 1024), str(memory.available // 1024)
        # statvfs can hang on a dead network mount: in a thread, bounded (the thread is left behind then).
        for path in ("/", home):
            with contextlib.suppress(TimeoutError):
                line = await asyncio.wait_for(asyncio.to_thread(_df, path), DISK_TIMEOUT)
                if line is not None:
                    report["df"].append(line)
        with contextlib.suppress(OSError, psutil.Error):
            report["dask_worker"] = "1" if await asyncio.to_thread(dask_worker_running) else "0"
        with contextlib.suppress(OSError, TimeoutError):
            raw = await battery
            if raw:
                report["battery"] = raw
    finally:
        if not battery.done():
            battery.cancel()
            with contextlib.suppress(BaseException):
                await battery
    report["end"] = "1"
    return report


async def probe_node(node: Node, config: Config, *, sample: float = CPU_SAMPLE) -> list[Observation]:
    """The node itself, as the agent sees it: `ssh.judge` over the report, so thresholds and messages
    are those of an SSH node; `target` says where the agent runs."""
    started = time.perf_counter()
    report = await node_report(sample=sample)
    latency = max(0.0, (time.perf_counter() - started - sample) * 1000)
    where = f"agent on {socket.gethostname()}"
    return [judge(node, config, report, where, latency)]
