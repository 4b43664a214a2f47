"""Which instance serves, told by real processes: the holder of a real listening port (and whether it
runs at all), Dask workers matched by their exact name (`w1` is not `w10`, also for `pgrep -f` over
SSH), systemd's MainPID through a stand-in `systemctl`, and the worker a scheduler listed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from clusterwatch.config.schema import Config, RestartPolicy
from clusterwatch.heal.evidence import (
    NOTHING_RUNS,
    Instance,
    is_local,
    is_worker_of,
    port_holder,
    serving,
    systemd_instance,
    worker_pattern,
    worker_processes,
)
from clusterwatch.model import Group, Observation, Status
from tests.helpers import Proc, closed_port, free_port, port_open, processes, wait_until

SLEEPER = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); time.sleep(600)"
# Names no other test's worker has (tests run side by side on this machine, real `--name w1` workers too)
W = f"t{uuid.uuid4().hex[:8]}w"


def config(check: dict) -> Config:
    return Config.model_validate({"checks": [check]})


def holder(check: dict) -> Instance | None:
    return asyncio.run(port_holder(config(check).checks[0]))


def http_server(tmp_path: Path, port: int) -> Proc:
    proc = Proc([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], tmp_path / f"http-{port}.log")
    wait_until(lambda: port_open(port), what=f"http.server on {port}")
    return proc


def test_port_holder_is_the_listening_process_and_sees_it_stopped(tmp_path: Path):
    port = free_port()
    proc = http_server(tmp_path, port)
    try:
        for check in (
            {"name": "svc", "kind": "tcp", "port": port},
            {"name": "svc", "kind": "http", "url": f"http://localhost:{port}/"},
            {"name": "svc", "kind": "http", "url": f"http://127.0.0.1:{port}/health"},
        ):
            found = holder(check)
            assert found is not None, check
            assert found.key == f"pid:{proc.pid}" and found.alive
            assert found.started == pytest.approx(psutil.Process(proc.pid).create_time(), abs=0.01)
            assert f"pid {proc.pid}" in found.what
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = wait_until(
            lambda: (h := holder({"name": "svc", "kind": "tcp", "port": port})) and not h.alive and h,
            what="the holder seen as stopped",
        )
        assert stopped.key == f"pid:{proc.pid}" and "stopped" in stopped.what
        os.kill(proc.pid, signal.SIGCONT)
        wait_until(lambda: holder({"name": "svc", "kind": "tcp", "port": port}).alive, what="running again")
    finally:
        proc.stop()
    wait_until(lambda: not port_open(port), what="the port free")
    assert holder({"name": "svc", "kind": "tcp", "port": port}) is None


def test_port_holder_only_for_this_machine():
    # No packet is sent: another machine's address is simply not this machine's business.
    assert holder({"name": "svc", "kind": "http", "url": "http://192.0.2.7:8080/"}) is None
    assert holder({"name": "svc", "kind": "tcp", "host": "db.example.com", "port": 5432}) is None
    assert holder({"name": "svc", "kind": "node"}) is None
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "127.0.1.1"):
        assert is_local(host), host
    for host in ("192.0.2.7", "example.com", ""):
        assert not is_local(host), host


def test_worker_names_match_exactly():
    dask = ["/venv/bin/python", "/venv/bin/dask", "worker", "tcp://10.0.0.1:8786"]
    assert is_worker_of([*dask, "--name", "w1"], "w1")
    assert is_worker_of([*dask, "--name=w1", "--nthreads", "1"], "w1")
    assert is_worker_of(["dask-worker", "tcp://s:8786", "--name", "w1"], "w1")
    assert is_worker_of(["python", "-m", "distributed.cli.dask_worker", "--name", "w1"], "w1")
    assert not is_worker_of([*dask, "--name", "w10"], "w1")
    assert not is_worker_of([*dask, "--name=w10"], "w1")
    assert not is_worker_of([*dask, "--name", "xw1"], "w1")
    assert not is_worker_of(["docker", "run", "--name", "w1", "busybox"], "w1")  # not a Dask worker
    assert not is_worker_of([*dask, "--nthreads", "w1"], "w1")


def test_pgrep_pattern_and_local_lookup_tell_w1_from_w10(tmp_path: Path):
    """The same exact match over SSH (`pgrep -f`, a regex on the joined argv) as here (argv elements)."""
    with processes() as started:
        names = (f"{W}1", f"{W}10", f"{W}.1x")
        for name in names:
            started.append(
                Proc(
                    [sys.executable, "-c", SLEEPER, "dask", "worker", "tcp://127.0.0.1:1", "--name", name],
                    tmp_path / f"{name}.log",
                )
            )
        by_name = {name: p.pid for name, p in zip(names, started, strict=True)}
        wait_until(lambda: all(psutil.Process(pid).cmdline()[-1] in by_name for pid in by_name.values()))
        for name, pid in by_name.items():
            found = subprocess.run(["pgrep", "-f", "--", worker_pattern(name)], capture_output=True, text=True)
            assert found.stdout.split() == [str(pid)], (name, worker_pattern(name), found.stdout)
            assert [p.pid for p in worker_processes(name)] == [pid]
        # A dot in a name is a dot, not any character.
        assert subprocess.run(["pgrep", "-f", "--", worker_pattern(f"{W}.1")], capture_output=True).stdout == b""
        assert worker_processes(f"{W}.1") == []


def test_systemd_main_pid_through_a_stand_in_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    args = tmp_path / "args"
    systemctl = bin_dir / "systemctl"
    stamp = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(1_700_000_000))
    # systemctl prints the properties in its own order, not the order of -p.
    systemctl.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {args}\n"
        f"printf 'ExecMainStartTimestamp={stamp}\\nMainPID={os.getpid()}\\n'\n"
    )
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = config({"name": "ollama", "kind": "tcp", "port": 1, "restart": {"systemd": "ollama.service"}})
    check = cfg.checks[0]
    assert check.restart is not None
    found = asyncio.run(serving(check.restart[0], check, cfg, "ollama", None))
    assert found is not None and found.key == f"pid:{os.getpid()}" and found.alive
    assert found.started == pytest.approx(1_700_000_000, abs=1)
    assert "ollama.service" in found.what
    assert args.read_text().splitlines() == [
        "show", "-p", "MainPID", "-p", "ExecMainStartTimestamp", "-p", "ActiveState", "--", "ollama.service",
    ]  # fmt: skip
    assert systemd_instance("MainPID=0\nExecMainStartTimestamp=\nActiveState=inactive\n", "ollama") is NOTHING_RUNS
    assert systemd_instance("MainPID=0\nActiveState=failed\n", "ollama.service") is NOTHING_RUNS
    # a oneshot unit (a `docker compose up -d` wrapper) is active with no main process: it cannot be told
    assert systemd_instance("MainPID=0\nExecMainStartTimestamp=\nActiveState=active\n", "stack.service") is None
    utc = systemd_instance("MainPID=4242\nExecMainStartTimestamp=Tue 2023-11-14 22:13:20 UTC\n", "u", node="n1")
    assert utc is not None and utc.key == "pid:4242" and utc.started == 1_700_000_000 and "on n1" in utc.what


def worker_seen(address: str) -> Observation:
    return Observation(
        f"dask/{W}1", "dask", address, Status.OK, "running", check="dask", group=Group.WORKERS,
        details={"host": "127.0.0.1", "status": "running", "nanny": None},
    )  # fmt: skip


def test_a_dask_worker_is_the_address_it_joined_with():
    cfg = Config.model_validate(
        {
            "checks": [
                {
                    "name": "dask",
                    "kind": "dask",
                    "expect_workers": [f"{W}1"],
                    "restart": {"command": ["restart-worker", "{entity}"]},
                }
            ]
        }
    )
    check = cfg.checks[0]
    assert check.restart is not None
    policy = check.restart[0].for_entity(f"{W}1", "local")

    def ask(last: Observation | None) -> Instance | None:
        return asyncio.run(serving(policy, check, cfg, f"dask/{W}1", last))

    first, again, other = (
        ask(worker_seen("tcp://127.0.0.1:40001")),
        ask(worker_seen("tcp://127.0.0.1:40001")),
        ask(worker_seen("tcp://127.0.0.1:40517")),
    )
    assert first is not None and first.key.startswith("worker:tcp://127.0.0.1:40001")
    assert again == first and other is not None and other.key != first.key
    # Not connected (the probe's "missing" entity names no address) and no such process here: cannot be told.
    missing = Observation(f"dask/{W}1", "dask", f"{W}1", Status.CRITICAL, "not connected", check="dask")
    assert ask(missing) is None and ask(None) is None


def test_no_answer_is_none_and_quick(tmp_path: Path):
    started = time.monotonic()
    for policy in (
        RestartPolicy(supervisor="svc", supervisor_url=f"http://127.0.0.1:{closed_port()}/RPC2"),
        RestartPolicy(docker="web", docker_socket=str(tmp_path / "no-such.sock")),
        RestartPolicy(command=["true"], node="far"),  # another machine: its port is not seen from here
    ):
        check = config({"name": "svc", "kind": "tcp", "port": closed_port()}).checks[0]
        assert asyncio.run(serving(policy, check, Config(), "svc", None)) is None
    assert time.monotonic() - started < 15


def test_whether_anything_listens_is_read_from_proc_net_before_any_process_scan():
    """Nothing listening (the usual case after a crash) is told from /proc/net/tcp alone, without the scan of
    every process's descriptors that finding a pid needs."""
    import socket

    from clusterwatch.heal.evidence import _listening

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert _listening(port) is False, "bound but not listening"
        sock.listen()
        assert _listening(port) is True
    with socket.socket(socket.AF_INET6) as sock6:
        sock6.bind(("::1", 0))
        sock6.listen()
        assert _listening(sock6.getsockname()[1]) is True, "an IPv6 listener is seen too"
