"""Restart actions: Docker Engine API, docker compose, systemd, supervisor (XML-RPC), a command,
a Dask worker. Commands are argv lists, executed without a shell; over SSH each argument is quoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from clusterwatch.config.schema import CheckBase, Config, DockerCheck, Node, RestartPolicy
from clusterwatch.probes.base import Unreachable
from clusterwatch.sshclient import run_remote

# supervisord's XML-RPC client blocks: a thread of its own, never the default executor's (DNS uses those)
_XMLRPC = ThreadPoolExecutor(2, thread_name_prefix="clusterwatch-xmlrpc")


@dataclass
class Outcome:
    ok: bool
    detail: str


async def perform(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    action = policy.action
    try:
        async with asyncio.timeout(policy.timeout):
            return await _ACTIONS[action](policy, check, config)
    except TimeoutError:
        return Outcome(False, f"{action} did not finish within {policy.timeout:g}s")
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
    return Outcome(True, f"restarted container {', '.join(names)} through the Engine API")


async def _exec(argv: list[str], timeout: float) -> Outcome:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except (TimeoutError, asyncio.CancelledError) as exc:
        # Out of time (here or in the caller): the command and its children go, never left behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return Outcome(False, f"`{' '.join(argv)}` killed after {timeout:g}s")
    text = output.decode("utf-8", "replace").strip()[-500:]
    if process.returncode != 0:
        return Outcome(False, f"`{' '.join(argv)}` exited {process.returncode}: {text}")
    return Outcome(True, f"`{' '.join(argv)}` exited 0" + (f": {text}" if text else ""))


async def _run(argv: list[str], policy: RestartPolicy, config: Config, node: Node | None) -> Outcome:
    if node is None:
        return await _exec(argv, policy.timeout)
    status, output = await run_remote(node, config, argv, policy.timeout)
    where = f"on {node.name}"
    if status != 0:
        return Outcome(False, f"`{' '.join(argv)}` {where} exited {status}: {output.strip()[-300:]}")
    return Outcome(True, f"`{' '.join(argv)}` {where} exited 0")


async def _command(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    assert policy.command is not None
    return await _run(policy.command, policy, config, _node(config, policy.node))


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
    return Outcome(True, f"supervisor restarted {program} (pid {info.get('pid')}, {info.get('statename')})")


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):  # type: ignore[no-untyped-def]
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


async def _dask_worker(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    """Cluster AI's manual fix: `pkill -f "dask-worker.*ID"`, then start it again, detached."""
    target = policy.dask_worker
    assert target is not None
    pattern = f"[d]ask(-worker| worker).*{re.escape(target.name)}"
    node = _node(config, target.node)
    if node is None:
        await _exec(["pkill", "-f", "--", pattern], policy.timeout)
        await asyncio.sleep(0.5)
        log = open(os.devnull, "wb")  # noqa: SIM115 - handed to the detached worker
        subprocess.Popen(target.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        return Outcome(True, f"worker {target.name}: stopped and started `{' '.join(target.command)}`")
    await run_remote(node, config, ["pkill", "-f", "--", pattern], policy.timeout)
    status, output = await run_remote(node, config, target.command, policy.timeout, background=True)
    if status not in (0, None):
        return Outcome(False, f"starting worker {target.name} on {node.name} failed ({status}): {output[-300:]}")
    return Outcome(True, f"worker {target.name} restarted on {node.name}")


_ACTIONS = {
    "docker": _docker,
    "compose": _compose,
    "systemd": _systemd,
    "supervisor": _supervisor,
    "command": _command,
    "dask_worker": _dask_worker,
}
