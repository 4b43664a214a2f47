"""Which instance of a restart's target serves: the evidence for crediting an attempt with a recovery.

"Healthy again" alone does not say who fixed it: a frozen service resumed by someone, or the slow
start of the previous attempt, looks the same from outside. Each action's own manager says which
instance runs (supervisord's pid, a container's Id and StartedAt, systemd's MainPID, the process
holding the check's port, the address a Dask worker joined with); the healer compares them across
an attempt. Asking never raises and never takes more than a few seconds: no answer is `None`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import urllib.parse
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil

from clusterwatch.config.schema import (
    CheckBase,
    Config,
    DaskCheck,
    DockerCheck,
    RestartPolicy,
    TcpCheck,
)
from clusterwatch.model import Observation

log = logging.getLogger("clusterwatch.healer")

EVIDENCE_TIMEOUT = 5.0  # a question about who serves never holds a restart up longer
# psutil scans /proc and supervisord's XML-RPC blocks: threads of their own, not the default executor's
_THREADS = ThreadPoolExecutor(2, thread_name_prefix="clusterwatch-evidence")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_NOT_RUNNING = {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD}


@dataclass(frozen=True)
class Instance:
    """One running incarnation of a service: a restart that worked changes its key."""

    key: str  # comparable identity: "pid:1234", "container:<id>@<StartedAt>", "worker:<address>"
    what: str  # for people: "pid 1234 (started 12:00:01)", "container open-webui started 12:00:01"
    started: float | None  # epoch seconds the instance started, when known
    alive: bool = True  # False: it exists but does not run (SIGSTOP'd, a zombie)


# Asked, and answered: none of the target runs (supervisord's pid 0, systemd's MainPID=0, no running
# container). Not None, which is "could not be told": a healthy check then is not this target's doing.
NOTHING_RUNS = Instance("nothing", "nothing of the target runs", None, alive=False)


async def serving(
    policy: RestartPolicy, check: CheckBase, config: Config, entity: str, last: Observation | None
) -> Instance | None:
    """Which instance of the policy's target serves now; None when it cannot be told (never raises;
    bounded by a few seconds)."""
    try:
        async with asyncio.timeout(EVIDENCE_TIMEOUT):
            return await _serving(policy, check, config, entity, last)
    except Exception as exc:  # the evidence is optional: a restart never fails for want of it
        log.debug("which instance of %s serves could not be told: %s", policy.target, exc)
        return None


async def port_holder(check: CheckBase) -> Instance | None:
    """The process listening on the check's own port, when the check's URL/host is this machine
    (127.0.0.1, ::1, localhost, 0.0.0.0) — psutil.net_connections; None otherwise or when it cannot be read."""
    where = check_port(check)
    if where is None or not is_local(where[0]):
        return None
    try:
        return await _in_thread(_listener, where[0], where[1])
    except Exception as exc:  # psutil without the rights to see other processes' sockets, a vanished pid
        log.debug("the holder of port %d could not be read: %s", where[1], exc)
        return None


def check_port(check: CheckBase) -> tuple[str, int] | None:
    """The host and port a check connects to, where it has one."""
    if isinstance(check, TcpCheck):
        return check.host, check.port
    if isinstance(check, DaskCheck):
        return check.scheduler_host_port
    url = getattr(check, "url", None)
    if not isinstance(url, str):
        return None
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return parts.hostname or "", port


def is_local(host: str) -> bool:
    """A loopback or unspecified address, or localhost: the check reaches a process on this machine."""
    host = host.strip("[]").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def process_instance(pid: int) -> Instance | None:
    """A local process as an Instance (its start time, whether it runs); None when it is gone."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            started, status = process.create_time(), process.status()
    except psutil.Error:
        return None
    alive = status not in _NOT_RUNNING
    state = "" if alive else f", {status}"
    return Instance(f"pid:{pid}", f"pid {pid} (started {clock(started)}{state})", started, alive)


def process_state(pid: int) -> str | None:
    """psutil's status of a local process ('stopped', 'zombie', 'sleeping', ...); None when it is gone."""
    try:
        return str(psutil.Process(pid).status())
    except psutil.Error:
        return None


def pid_of(instance: Instance) -> int | None:
    """The pid in a "pid:N" key."""
    kind, _, value = instance.key.partition(":")
    return int(value) if kind == "pid" and value.isdigit() else None


def clock(epoch: float) -> str:
    """A start time for people: the time of day, with the date when it is not today."""
    moment = datetime.fromtimestamp(epoch)
    if moment.date() == datetime.now().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _listening(port: int) -> bool | None:
    """Does anything listen on the port here? From /proc/net/tcp{,6} alone: a few lines to read, where
    finding the pid means every process's file descriptors (0.3-0.5 s with thousands of sockets, seconds
    on a busy machine) — not worth it when nothing listens, the usual case after a crash. None: cannot tell."""
    found = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        found = bool(found)
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return found


def _listener(host: str, port: int) -> Instance | None:
    """The pid listening on the port (the one bound to the check's own address first)."""
    if _listening(port) is False:
        return None
    wanted = host.strip("[]").lower()
    found: list[tuple[int, int]] = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port or conn.pid is None:
            continue
        bound = str(conn.laddr.ip).lower()
        if not is_local(bound):
            continue  # a listener on another of this machine's addresses is not what the check reaches
        exact = bound == wanted or (wanted in _LOCAL_NAMES and is_local(bound))
        found.append((0 if exact else 1, conn.pid))
    for _, pid in sorted(found):
        instance = process_instance(pid)
        if instance is not None:
            return instance
    return None


async def _in_thread(function: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_THREADS, function, *args)


async def _serving(
    policy: RestartPolicy, check: CheckBase, config: Config, entity: str, last: Observation | None
) -> Instance | None:
    action = policy.action
    worker = _worker_name(policy, check, entity)
    if action == "dask_worker" or (action == "command" and worker is not None):
        # A worker's own evidence: the check's port is its scheduler's, not the worker's.
        assert worker is not None
        local = policy.node is None and (policy.dask_worker is None or policy.dask_worker.node is None)
        return await _in_thread(_worker_instance, worker, last, local)
    if action == "supervisor":
        return await _in_thread(_supervisor_instance, policy.supervisor_url, policy.supervisor)
    if action == "systemd":
        return await _systemd_instance(policy, config)
    if action == "docker":
        return await _docker_instance(policy, check)
    if action == "compose":
        return await _compose_instance(policy, check)
    if action == "command" and policy.node is None:
        return await port_holder(check)
    return None


# --- supervisord -------------------------------------------------------------------------------


def _supervisor_instance(url: str, program: str | None) -> Instance | None:
    from clusterwatch.heal.actions import _TimeoutTransport

    if not program:
        return None
    proxy = xmlrpc.client.ServerProxy(url, transport=_TimeoutTransport(EVIDENCE_TIMEOUT), allow_none=True)
    try:
        info = proxy.supervisor.getProcessInfo(program)
    except (xmlrpc.client.Error, OSError) as exc:
        log.debug("supervisor at %s: no process info for %s: %s", url.split("@")[-1], program, exc)
        return None
    return supervisor_instance(info, url)


def supervisor_instance(info: Any, url: str) -> Instance | None:
    """supervisord's getProcessInfo as an Instance: its pid and start (whether it runs, from psutil
    when supervisord is on this machine: supervisord still says RUNNING of a SIGSTOP'd program)."""
    if not isinstance(info, dict):
        return None
    pid, start = info.get("pid"), info.get("start")
    if not isinstance(pid, int):
        return None
    if pid <= 0:
        return NOTHING_RUNS
    started = float(start) if isinstance(start, int | float) and start > 0 else None
    alive, state = True, ""
    host = urllib.parse.urlsplit(url).hostname or ""
    if is_local(host):
        status = process_state(pid)
        if status is not None and status in _NOT_RUNNING:
            alive, state = False, f", {status}"
    when = f"started {clock(started)}" if started is not None else str(info.get("statename") or "?")
    return Instance(f"pid:{pid}", f"pid {pid} of {info.get('name') or 'the program'} ({when}{state})", started, alive)


# --- systemd -----------------------------------------------------------------------------------


async def _systemd_instance(policy: RestartPolicy, config: Config) -> Instance | None:
    """MainPID and ExecMainStartTimestamp of the unit, here or over SSH on the policy's node."""
    from clusterwatch.heal.actions import _exec_output, _node
    from clusterwatch.sshclient import run_remote

    assert policy.systemd is not None
    # Without --value: the lines then name their property (systemctl prints them in its own order).
    argv = ["systemctl", "show", "-p", "MainPID", "-p", "ExecMainStartTimestamp", "-p", "ActiveState"]
    argv += ["--", policy.systemd]
    node = _node(config, policy.node)
    if node is None:
        status, output = await _exec_output(argv, EVIDENCE_TIMEOUT)
    else:
        status, output = await run_remote(node, config, argv, EVIDENCE_TIMEOUT)
    if status != 0:
        return None
    return systemd_instance(output, policy.systemd, node.name if node else None)


def systemd_instance(output: str, unit: str, node: str | None = None) -> Instance | None:
    """`systemctl show -p MainPID -p ExecMainStartTimestamp -p ActiveState` as an Instance. MainPID=0 of
    a unit that is not active: nothing runs; of an active one (Type=oneshot, as `docker compose up -d`
    wrappers are, or forking without a PIDFile): it cannot be told from here."""
    values = dict(line.partition("=")[::2] for line in output.splitlines() if "=" in line)
    pid_text = values.get("MainPID", "").strip()
    if not pid_text.isdigit():
        return None
    if int(pid_text) == 0:
        return NOTHING_RUNS if values.get("ActiveState", "").strip() in ("inactive", "failed") else None
    pid, stamp = int(pid_text), values.get("ExecMainStartTimestamp", "").strip()
    started = _systemd_time(stamp)
    where = f" on {node}" if node else ""
    when = f"started {clock(started)}" if started is not None else f"started {stamp or '?'}"
    alive = True
    if node is None:
        status = process_state(pid)
        alive = status is None or status not in _NOT_RUNNING
        when += "" if alive else f", {status}"
    return Instance(f"pid:{pid}", f"{unit} pid {pid}{where} ({when})", started, alive)


def _systemd_time(stamp: str) -> float | None:
    """systemd's "Mon 2024-01-01 12:00:01 UTC" (the zone as the machine names it): epoch seconds."""
    match = re.match(r"^\w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?: (\S+))?$", stamp)
    if not match:
        return None
    moment = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    if match.group(2) in ("UTC", "GMT"):
        return moment.replace(tzinfo=UTC).timestamp()
    return moment.timestamp()  # the machine's own zone (right for this machine; near enough for another)


# --- Docker Engine -----------------------------------------------------------------------------


def _socket(policy: RestartPolicy, check: CheckBase) -> str:
    return policy.docker_socket or (check.socket if isinstance(check, DockerCheck) else "/var/run/docker.sock")


async def _docker_instance(policy: RestartPolicy, check: CheckBase) -> Instance | None:
    from clusterwatch.probes.docker import match_containers
    from clusterwatch.probes.docker_client import Engine

    assert policy.docker is not None
    if not os.path.exists(_socket(policy, check)):
        return None
    async with Engine(_socket(policy, check), EVIDENCE_TIMEOUT) as engine:
        found = match_containers(policy.docker, await engine.containers())
        return await containers_instance(engine, [c["Id"] for c in found])


async def _compose_instance(policy: RestartPolicy, check: CheckBase) -> Instance | None:
    """The service's containers, by the labels `docker compose` puts on them (a local Engine only)."""
    from clusterwatch.probes.docker_client import _SAFE_ID, Engine

    target = policy.compose
    assert target is not None
    if policy.node is not None or not os.path.exists(_socket(policy, check)):
        return None  # compose on another machine: its Engine is not this one's socket
    labels = [f"com.docker.compose.project={target.project}", f"com.docker.compose.service={target.service}"]
    async with Engine(_socket(policy, check), EVIDENCE_TIMEOUT) as engine:
        # Engine has no label filter of its own; the same bounded call, with the filter the API takes.
        listed = await engine._call(
            "/containers/json", engine._docker.containers.list(all=True, filters={"label": labels})
        )
        ids = [c["Id"] for c in listed if isinstance(c["Id"], str) and _SAFE_ID.match(c["Id"])]
        return await containers_instance(engine, ids)


async def containers_instance(engine: Any, ids: list[str]) -> Instance | None:
    """The containers' Id and StartedAt as one Instance (a restart of any of them changes its key)."""
    from clusterwatch.probes.docker import _parse_time

    parts: list[tuple[str, str, float | None, bool, str]] = []
    for container_id in ids:
        inspect = await engine.inspect(container_id)
        if not isinstance(inspect, dict):
            continue
        state = inspect.get("State") if isinstance(inspect.get("State"), dict) else {}
        if not state.get("Running"):
            continue  # a stopped container serves nothing
        stamp = str(state.get("StartedAt") or "")
        name = str(inspect.get("Name") or container_id[:12]).lstrip("/")
        alive = not state.get("Paused") and not state.get("Restarting")
        parts.append((f"container:{inspect.get('Id') or container_id}@{stamp}", name, _parse_time(stamp), alive, stamp))
    if not parts:
        return NOTHING_RUNS
    parts.sort()
    starts = [p[2] for p in parts if p[2] is not None]
    described = []
    for _, name, started, alive, stamp in parts:
        when = clock(started) if started is not None else stamp or "?"
        described.append(f"container {name} started {when}" + ("" if alive else " (paused)"))
    return Instance(
        "+".join(p[0] for p in parts),
        ", ".join(described),
        max(starts) if len(starts) == len(parts) else None,
        all(p[3] for p in parts),
    )


# --- Dask workers ------------------------------------------------------------------------------


def _worker_name(policy: RestartPolicy, check: CheckBase, entity: str) -> str | None:
    """The Dask worker a restart is about: the dask_worker action's name, or a worker entity's own."""
    if policy.dask_worker is not None:
        return policy.dask_worker.name
    if isinstance(check, DaskCheck):
        prefix = f"{check.name}/"
        if entity.startswith(prefix) and len(entity) > len(prefix):
            return entity[len(prefix) :]
    return None


def _worker_instance(name: str, last: Observation | None, local: bool) -> Instance | None:
    """A worker as the scheduler last listed it: its address (a restarted worker comes back on a new
    random port) and, when it runs here, its process; else the local process with that exact name."""
    address = None
    if last is not None:
        details = last.details if isinstance(last.details, dict) else {}
        for value in (details.get("id"), details.get("address"), last.target):
            if isinstance(value, str) and "://" in value:
                address = value
                break
    process = None
    if local:
        processes = worker_processes(name)
        process = process_instance(processes[0].pid) if processes else None
    if address is None and process is None:
        return None
    if address is None:
        assert process is not None
        return Instance(f"worker:{name}@{process.key}", f"worker {name} {process.what}", process.started, process.alive)
    key = f"worker:{address}" + (f"@{process.key}" if process else "")
    what = f"worker {name} at {address}" + (f", {process.what}" if process else "")
    return Instance(key, what, process.started if process else None, process.alive if process else True)


def is_worker_of(cmdline: list[str], name: str) -> bool:
    """A `dask worker` (or `dask-worker`, `python -m distributed.cli.dask_worker`) started with
    `--name NAME` exactly: `--name w1` never matches a `--name w10`."""
    worker = named = False
    for index, arg in enumerate(cmdline):
        base = os.path.basename(arg)
        following = cmdline[index + 1] if index + 1 < len(cmdline) else None
        if base in ("dask-worker", "dask_worker") or arg.endswith("distributed.cli.dask_worker"):
            worker = True
        worker = worker or (base == "dask" and following == "worker")
        if (arg == "--name" and following == name) or arg == f"--name={name}":
            named = True
    return worker and named


def worker_processes(name: str) -> list[psutil.Process]:
    """Local processes of the Dask worker with exactly this name (never this process)."""
    own = os.getpid()
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = process.info.get("cmdline")
            if process.pid != own and cmdline and is_worker_of(cmdline, name):
                found.append(process)
    return sorted(found, key=lambda p: p.pid)


def worker_pattern(name: str) -> str:
    """An extended regex for `pgrep -f`/`pkill -f` (the argv joined by spaces) matching the worker's
    `--name NAME` as a whole argument. `[d]` keeps it from matching the shell that runs it over SSH."""
    escaped = re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", name)
    return rf"[d]ask(-worker| worker|_worker)( .*)? --name[= ]{escaped}( |$)"
