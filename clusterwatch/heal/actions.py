"""Restart actions: Docker Engine API, docker compose, systemd, supervisor (XML-RPC), a command,
a Dask worker. Commands are argv lists, executed without a shell; over SSH each argument is quoted.

A restart is stop, then start: a hung (SIGSTOP'd, deadlocked) process keeps its port, and a second
copy started beside it dies on "address already in use" while the old one looks healthy when resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psutil

from clusterwatch.config.schema import CheckBase, Config, DockerCheck, Node, RestartPolicy
from clusterwatch.heal.evidence import (
    Instance,
    check_port,
    containers_instance,
    is_local,
    pid_of,
    port_holder,
    process_state,
    supervisor_instance,
    worker_pattern,
    worker_processes,
)
from clusterwatch.probes.base import Unreachable
from clusterwatch.sshclient import run_remote

# supervisord's XML-RPC client blocks: a thread of its own, never the default executor's (DNS uses those)
_XMLRPC = ThreadPoolExecutor(2, thread_name_prefix="clusterwatch-xmlrpc")
# Finding, signalling and waiting for local processes blocks too (psutil over /proc, wait_procs)
_PROCESSES = ThreadPoolExecutor(2, thread_name_prefix="clusterwatch-processes")


OUTPUT_KEPT = 64 * 1024  # the tail of a command's output that is read (a message keeps less)


@dataclass
class Outcome:
    ok: bool
    detail: str
    instance: Instance | None = None  # what the action itself started, when it knows (supervisor's pid, a container)


async def perform(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    action = policy.action
    limit = policy.limit
    try:
        async with asyncio.timeout(limit):
            return await _ACTIONS[action](policy, check, config)
    except TimeoutError:
        return Outcome(False, f"{action} did not finish within {limit:g}s")
    except Unreachable as exc:
        return Outcome(False, str(exc))
    except OSError as exc:
        return Outcome(False, f"{action}: {exc.strerror or exc}")
    except Exception as exc:  # e.g. asyncssh's auth or host-key errors: recorded, never raised
        return Outcome(False, f"{action}: {type(exc).__name__}: {exc}")


def _node(config: Config, name: str | None) -> Node | None:
    return next((n for n in config.nodes if n.name == name), None) if name else None


async def _docker(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    """Restart every container the name matches, through the Engine API (aiodocker), within the timeout."""
    from clusterwatch.probes.docker import match_containers
    from clusterwatch.probes.docker_client import Engine

    socket = policy.docker_socket or (check.socket if isinstance(check, DockerCheck) else "/var/run/docker.sock")
    assert policy.docker is not None
    async with Engine(socket, policy.timeout) as engine:
        found = match_containers(policy.docker, await engine.containers())
        if not found:
            return Outcome(False, f"no container matches {policy.docker!r}")
        names = []
        for container in found:
            await engine.restart(container["Id"], stop_timeout=10)
            names.append(str((container.get("Names") or ["?"])[0]).lstrip("/"))
        started = await containers_instance(engine, [c["Id"] for c in found])
    return Outcome(True, f"restarted container {', '.join(names)} through the Engine API", started)


async def _exec_output(argv: list[str], timeout: float) -> tuple[int | None, str]:
    """Run an argv (no shell) in a session of its own: its exit status and output; None when it was killed.

    The output goes to a file, and the wait is for the command's exit, not for the end of its output: a
    start command that leaves a daemon behind (`nohup ... &`, which keeps the output open) is done when it
    exits, and the service it started is not killed as "out of time"."""
    with tempfile.TemporaryFile() as out:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except (TimeoutError, asyncio.CancelledError) as exc:
            # Out of time (here or in the caller): the command and its children go, never left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return None, ""
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_KEPT))
        return process.returncode, out.read().decode("utf-8", "replace")


async def _exec(argv: list[str], timeout: float) -> Outcome:
    status, output = await _exec_output(argv, timeout)
    if status is None:
        return Outcome(False, f"`{' '.join(argv)}` killed after {timeout:g}s")
    text = output.strip()[-500:]
    if status != 0:
        return Outcome(False, f"`{' '.join(argv)}` exited {status}: {text}")
    return Outcome(True, f"`{' '.join(argv)}` exited 0" + (f": {text}" if text else ""))


async def _run(
    argv: list[str], policy: RestartPolicy, config: Config, node: Node | None, timeout: float | None = None
) -> Outcome:
    timeout = policy.timeout if timeout is None else timeout
    if node is None:
        return await _exec(argv, timeout)
    status, output = await run_remote(node, config, argv, timeout)
    where = f"on {node.name}"
    if status != 0:
        return Outcome(False, f"`{' '.join(argv)}` {where} exited {status}: {output.strip()[-300:]}")
    return Outcome(True, f"`{' '.join(argv)}` {where} exited 0")


async def _command(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    """`stop` (when given) until the old instance is gone, then `command`; never a second copy beside a hung one."""
    assert policy.command is not None
    node = _node(config, policy.node)
    said = ""
    if policy.stop is not None:
        stopped = await _stop_first(policy, check, config, node)
        if not stopped.ok:
            return stopped
        said = f"{stopped.detail}; then "
    elif node is None:
        refusal = await _hung_holder(check)
        if refusal is not None:
            return Outcome(False, refusal)
    started = await _run(policy.command, policy, config, node)
    return Outcome(started.ok, said + started.detail)


async def _hung_holder(check: CheckBase) -> str | None:
    """Why a start-only restart would start a second copy that dies on the port: its holder does not run."""
    holder = await port_holder(check)
    pid = pid_of(holder) if holder is not None else None
    if holder is None or holder.alive or pid is None:
        return None
    where = check_port(check)
    port = where[1] if where else "?"
    state = process_state(pid)
    how = "is a zombie" if state == psutil.STATUS_ZOMBIE else f"is {state or 'not running'} (SIGSTOP?)"
    return (
        f"pid {pid} holds port {port} and {how}: a command restart without `stop:` would start a second copy "
        "— give this restart a `stop:`"
    )


async def _stop_first(policy: RestartPolicy, check: CheckBase, config: Config, node: Node | None) -> Outcome:
    """Run `stop`, then wait (stop_timeout) until the old instance is gone: the process that held the
    check's port before has let it go, or nothing takes connections there. Not ok: do not start."""
    assert policy.stop is not None
    where = check_port(check)
    local = where is not None and is_local(where[0]) and node is None
    before = await port_holder(check) if local else None
    stopped = await _run(policy.stop, policy, config, node, policy.stop_timeout)
    said = f"stop: {stopped.detail}"
    if where is None or (node is not None and is_local(where[0])):
        return Outcome(True, said)  # no port of its own to watch here: the stop's word is all there is
    host, port = where
    loop = asyncio.get_running_loop()
    begun = loop.time()
    deadline = begun + policy.stop_timeout
    while True:
        holder = await port_holder(check) if local else None
        taken = holder is not None or await _accepts(host, port)
        if not taken:
            gone = f"pid {pid_of(before)}" if before is not None and pid_of(before) else f"port {port}"
            return Outcome(True, f"{said}; {gone} free after {loop.time() - begun:.1f}s")
        if loop.time() >= deadline:
            break
        await asyncio.sleep(0.2)
    if holder is not None and before is not None and holder.key != before.key:
        who = f"pid {pid_of(holder)} (not pid {pid_of(before)}, the one stopped: something started it again)"
    elif holder is not None:
        who = f"pid {pid_of(holder)} still"
    else:
        who = f"something on {host} still"
    return Outcome(
        False,
        f"{said}; {who} holds port {port} after `stop` ({policy.stop_timeout:g}s): not starting a second copy",
    )


async def _accepts(host: str, port: int) -> bool:
    """Something takes connections on the port (a SIGSTOP'd listener still does, into its backlog)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host in ("::", "[::]") else host.strip("[]")
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_connection(target, port)
    except (OSError, TimeoutError) as exc:
        return isinstance(exc, TimeoutError)  # refused: free; no answer at all: a full backlog is still taken
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1)
    return True


async def _systemd(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    assert policy.systemd is not None
    return await _run(["systemctl", "restart", policy.systemd], policy, config, _node(config, policy.node))


async def _compose(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    target = policy.compose
    assert target is not None
    argv = ["docker", "compose", "-p", target.project]
    if target.file:
        argv += ["-f", target.file]
    argv += ["up", "-d", target.service]
    return await _run(argv, policy, config, _node(config, policy.node))


async def _supervisor(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    assert policy.supervisor is not None
    return await asyncio.get_running_loop().run_in_executor(
        _XMLRPC, _supervisor_restart, policy.supervisor_url, policy.supervisor, policy.timeout
    )


def _supervisor_restart(url: str, program: str, timeout: float) -> Outcome:
    transport = _TimeoutTransport(timeout)
    proxy = xmlrpc.client.ServerProxy(url, transport=transport, allow_none=True)
    try:
        try:
            proxy.supervisor.stopProcess(program, True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                raise
        proxy.supervisor.startProcess(program, True)
        info = proxy.supervisor.getProcessInfo(program)
    except xmlrpc.client.Fault as fault:
        return Outcome(False, f"supervisor refused for {program}: {fault.faultString}")
    except (OSError, xmlrpc.client.ProtocolError) as exc:
        return Outcome(False, f"supervisor at {url.split('@')[-1]} unreachable: {exc}")
    started = supervisor_instance(info, url)
    return Outcome(True, f"supervisor restarted {program} (pid {info.get('pid')}, {info.get('statename')})", started)


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):  # type: ignore[no-untyped-def]
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


async def _dask_worker(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    """Cluster AI's manual fix, `pkill -f "dask-worker.*ID"` then start it again, with the name matched
    exactly (`w1` never stops `w10`) and the old worker gone (SIGTERM, SIGKILL after stop_timeout) first."""
    target = policy.dask_worker
    assert target is not None
    node = _node(config, target.node)
    if node is None:
        found = await asyncio.get_running_loop().run_in_executor(_PROCESSES, worker_processes, target.name)
        left = await _stop_processes(found, policy.stop_timeout)
        if left:
            return Outcome(
                False,
                f"worker {target.name}: pid {', '.join(map(str, left))} still running after SIGTERM and SIGKILL: "
                "not starting a second copy",
            )
        with open(os.devnull, "wb") as log:  # the detached worker keeps its own copy
            process = subprocess.Popen(
                target.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        stopped = f"stopped pid {', '.join(str(p.pid) for p in found)}" if found else "none was running"
        return Outcome(
            True, f"worker {target.name}: {stopped}; started `{' '.join(target.command)}` (pid {process.pid})"
        )
    ticks = max(1, round(policy.stop_timeout / 0.2))
    status, output = await run_remote(
        node, config, ["sh", "-c", _REMOTE_STOP, "sh", worker_pattern(target.name), str(ticks)], policy.timeout
    )
    if status != 0:
        return Outcome(
            False, f"stopping worker {target.name} on {node.name} failed ({status}): {output.strip()[-300:]}"
        )
    status, output = await run_remote(node, config, target.command, policy.timeout, background=True)
    if status not in (0, None):
        return Outcome(False, f"starting worker {target.name} on {node.name} failed ({status}): {output[-300:]}")
    return Outcome(True, f"worker {target.name} restarted on {node.name}")


# Over SSH: $1 is the worker's pattern, $2 how many 0.2 s waits before SIGKILL. SIGCONT after SIGTERM:
# a SIGSTOP'd worker handles its SIGTERM only once it runs again. Fixed text: no config reaches it.
_REMOTE_STOP = """pkill -TERM -f -- "$1"; pkill -CONT -f -- "$1"; n=0
while pgrep -f -- "$1" >/dev/null; do
  n=$((n+1))
  if [ "$n" -gt "$2" ]; then pkill -KILL -f -- "$1"; sleep 1; break; fi
  sleep 0.2
done
if pgrep -f -- "$1" >/dev/null; then echo "still running: $(pgrep -f -- "$1" | tr '\\n' ' ')"; exit 3; fi
exit 0
"""


async def _stop_processes(found: list[psutil.Process], timeout: float) -> list[int]:
    """SIGTERM to each, SIGCONT to each and its children (a SIGSTOP'd process handles SIGTERM only once it
    runs), SIGKILL to whatever of them is left after `timeout`; the pids still running after that."""

    def stop() -> list[int]:
        every: list[psutil.Process] = []
        for process in found:
            with contextlib.suppress(psutil.Error):
                every += [process, *process.children(recursive=True)]
        for process, sig in [*((p, signal.SIGTERM) for p in found), *((p, signal.SIGCONT) for p in every)]:
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)
        _, alive = psutil.wait_procs(every, timeout=timeout)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        _, alive = psutil.wait_procs(alive, timeout=5)
        return [p.pid for p in alive if _running(p)]

    if not found:
        return []
    return await asyncio.get_running_loop().run_in_executor(_PROCESSES, stop)


def _running(process: psutil.Process) -> bool:
    """Still there and not a zombie (a dead child its parent has not reaped yet holds nothing)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


_ACTIONS = {
    "docker": _docker,
    "compose": _compose,
    "systemd": _systemd,
    "supervisor": _supervisor,
    "command": _command,
    "dask_worker": _dask_worker,
}
