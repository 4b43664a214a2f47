"""A restart is stop, then start, and the evidence says which instance serves after it: real HTTP
servers (SIGSTOP'd, as a hung service is), a real supervisord, real Dask workers, a real Docker Engine.

What was seen before: a start-only command "restarted" a frozen service; the new process died on
"address already in use" and the old one, resumed later, was taken for the restart's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from clusterwatch.config.schema import CheckBase, Config, RestartPolicy
from clusterwatch.heal.actions import Outcome, perform
from clusterwatch.heal.evidence import NOTHING_RUNS, Instance, port_holder, serving, worker_processes
from tests.conftest import observe
from tests.helpers import Proc, free_port, port_open, wait_until
from tests.real.daemon import helper
from tests.real.dask_cluster import BIN, DaskCluster
from tests.real.docker_engine import DockerEngine
from tests.real.sshd import SSHServer


def tcp(port: int) -> tuple[Config, CheckBase]:
    config = Config.model_validate({"checks": [{"name": "svc", "kind": "tcp", "port": port}]})
    return config, config.checks[0]


def act(policy: RestartPolicy, check: CheckBase, config: Config) -> Outcome:
    return asyncio.run(perform(policy, check, config))


def holder(check: CheckBase) -> Instance | None:
    return asyncio.run(port_holder(check))


def serves(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
        return answer.status == 200


@contextlib.contextmanager
def killed_at_end() -> Iterator[set[int]]:
    """PIDs a test (or the action it ran) started: each killed by its PID at the end, whatever happened."""
    pids: set[int] = set()
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_server(port: int, pidfile: Path, pids: set[int]) -> int:
    """`restart_helper --serve`: an HTTP server detached from its starter, as a service would be."""
    asyncio.run(asyncio.create_subprocess_exec(*helper("--serve", str(port), "--pidfile", str(pidfile))))
    pid = int(wait_until(lambda: pidfile.read_text().strip(), what="the server's pidfile"))
    pids.add(pid)
    wait_until(lambda: port_open(port), what=f"the server on {port}")
    return pid


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def supervised_http(tmp_path: Path) -> Iterator[tuple[str, int, set[int]]]:
    """A real supervisord running `svc`, an HTTP server; every pid it ran is killed at the end."""
    rpc, port = free_port(), free_port()
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"""\
[supervisord]
nodaemon=true
logfile={tmp_path / "supervisord.log"}
pidfile={tmp_path / "supervisord.pid"}
childlogdir={tmp_path}

[inet_http_server]
port=127.0.0.1:{rpc}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:svc]
command={sys.executable} -m http.server {port} --bind 127.0.0.1
directory=/
autostart=true
autorestart=false
startsecs=1
stopwaitsecs=2
""")
    supervisord = Proc([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], tmp_path / "sv.out")
    with killed_at_end() as pids:
        try:
            wait_until(lambda: port_open(rpc), what="supervisord")
            wait_until(lambda: port_open(port), what="the supervised server")
            yield f"http://127.0.0.1:{rpc}/RPC2", port, pids
        finally:
            supervisord.stop(timeout=15)


def test_supervisor_restart_of_a_stopped_program_serves_a_new_pid(supervised_http):
    url, port, pids = supervised_http
    config, check = tcp(port)
    policy = RestartPolicy(supervisor="svc", supervisor_url=url, timeout=30)
    before = asyncio.run(serving(policy, check, config, "svc", None))
    assert before is not None and before.alive and before.started is not None
    old = int(before.key.removeprefix("pid:"))
    pids.add(old)
    assert holder(check).key == before.key  # supervisord's pid is the one on the port
    os.kill(old, signal.SIGSTOP)  # hung: supervisord still says RUNNING, the process does not run
    wait_until(lambda: not asyncio.run(serving(policy, check, config, "svc", None)).alive, what="seen stopped")

    outcome = act(policy, check, config)
    assert outcome.ok, outcome.detail
    assert outcome.instance is not None and outcome.instance.key != before.key
    pids.add(int(outcome.instance.key.removeprefix("pid:")))
    wait_until(lambda: serves(port), what="the new instance serving")
    after = asyncio.run(serving(policy, check, config, "svc", None))
    assert after is not None and after.key == outcome.instance.key and after.alive
    assert holder(check) is not None and holder(check).key == after.key
    assert gone(old)


def test_command_restart_with_stop_replaces_a_hung_server(tmp_path: Path):
    port, pidfile, counter = free_port(), tmp_path / "svc.pid", tmp_path / "starts"
    config, check = tcp(port)
    with killed_at_end() as pids:
        old = start_server(port, pidfile, pids)
        os.kill(old, signal.SIGSTOP)
        policy = RestartPolicy(
            command=helper("--count", str(counter), "--serve", str(port), "--pidfile", str(pidfile)),
            stop=["pkill", "-KILL", "-F", str(pidfile)],  # SIGTERM would wait for a SIGCONT
            stop_timeout=10,
        )
        outcome = act(policy, check, config)
        assert outcome.ok, outcome.detail
        assert f"pid {old} free after" in outcome.detail and "then" in outcome.detail
        new = int(wait_until(lambda: (t := pidfile.read_text().strip()) != str(old) and t, what="new pidfile"))
        pids.add(new)
        wait_until(lambda: serves(port), what="the new server")
        assert holder(check) is not None and holder(check).key == f"pid:{new}" and holder(check).alive
        assert gone(old)
        assert len(counter.read_text().splitlines()) == 1


def test_command_restart_with_a_stop_that_leaves_it_refuses_to_start(tmp_path: Path):
    port, pidfile, counter = free_port(), tmp_path / "svc.pid", tmp_path / "starts"
    config, check = tcp(port)
    with killed_at_end() as pids:
        old = start_server(port, pidfile, pids)
        os.kill(old, signal.SIGSTOP)
        policy = RestartPolicy(
            command=helper("--count", str(counter), "--serve", str(port)), stop=["true"], stop_timeout=1
        )
        outcome = act(policy, check, config)
        assert not outcome.ok
        assert f"pid {old} still holds port {port} after `stop`" in outcome.detail
        assert "not starting a second copy" in outcome.detail
        assert not counter.exists()  # the command never ran
        assert holder(check) is not None and holder(check).key == f"pid:{old}"


def test_command_restart_without_stop_refuses_beside_a_stopped_server(tmp_path: Path):
    port, pidfile, counter = free_port(), tmp_path / "svc.pid", tmp_path / "starts"
    config, check = tcp(port)
    policy = RestartPolicy(command=helper("--count", str(counter)))
    with killed_at_end() as pids:
        old = start_server(port, pidfile, pids)
        os.kill(old, signal.SIGSTOP)
        outcome = act(policy, check, config)
        assert not outcome.ok
        assert f"pid {old} holds port {port} and is stopped (SIGSTOP?)" in outcome.detail
        assert "give this restart a `stop:`" in outcome.detail
        assert not counter.exists()
        os.kill(old, signal.SIGCONT)  # running again: a start-only command runs as it always did
        wait_until(lambda: holder(check).alive, what="the server running again")
        outcome = act(policy, check, config)
        assert outcome.ok, outcome.detail
        assert len(counter.read_text().splitlines()) == 1


def unique() -> str:
    """A worker-name prefix no other test uses: other tests run real `--name w1` workers on this machine too."""
    return f"t{uuid.uuid4().hex[:8]}w"


def stand_in(name: str, deaf: bool = False) -> list[str]:
    """The command line of `dask worker ... --name NAME`, doing nothing (deaf: ignoring SIGTERM)."""
    deafness = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if deaf else ""
    code = f"import signal, time; {deafness}print('ready', flush=True); time.sleep(600)"
    return [sys.executable, "-c", code, "dask", "worker", "tcp://127.0.0.1:1", "--name", name]


def test_dask_worker_restart_stops_w1_and_never_w10(tmp_path: Path):
    one, ten = f"{(w := unique())}1", f"{w}10"
    w1 = Proc(stand_in(one, deaf=True), tmp_path / "w1.log")
    w10 = Proc(stand_in(ten), tmp_path / "w10.log")
    with killed_at_end() as pids:
        pids.update({w1.pid, w10.pid})
        try:
            wait_until(lambda: [p.pid for p in worker_processes(one)] == [w1.pid], what="the stand-in w1")
            wait_until(lambda: [p.pid for p in worker_processes(ten)] == [w10.pid], what="the stand-in w10")
            wait_until(lambda: "ready" in w1.tail(), what="the stand-in w1 ignoring SIGTERM")
            w1.signal(signal.SIGSTOP)  # hung, and deaf to SIGTERM: only SIGKILL after stop_timeout takes it
            policy = RestartPolicy(dask_worker={"name": one, "command": stand_in(one)}, stop_timeout=1)
            config, check = tcp(free_port())
            outcome = act(policy, check, config)
            assert outcome.ok, outcome.detail
            assert f"stopped pid {w1.pid}" in outcome.detail  # by SIGKILL, after stop_timeout
            new = [p.pid for p in worker_processes(one)]
            pids.update(new)
            assert len(new) == 1 and new[0] != w1.pid
            assert gone(w1.pid) or not w1.alive()
            assert w10.alive() and psutil.Process(w10.pid).status() != psutil.STATUS_STOPPED
            assert [p.pid for p in worker_processes(ten)] == [w10.pid]
        finally:
            w1.stop()
            w10.stop()


def test_a_real_dask_worker_restarted_by_name_joins_with_a_new_address(tmp_path: Path):
    cluster = DaskCluster(tmp_path / "dask")
    one, ten = f"{(w := unique())}1", f"{w}10"
    with killed_at_end() as pids:
        try:
            cluster.start_scheduler()
            w1, w10 = cluster.start_worker(one), cluster.start_worker(ten)
            pids.update({w1.pid, w10.pid})
            raw = {"name": "dask", "kind": "dask", "scheduler": cluster.address, "dashboard": cluster.dashboard}
            config = Config.model_validate({"checks": [{**raw, "expect_workers": [one, ten]}]})
            check = config.checks[0]
            seen = observe(tmp_path, {"checks": [{**raw, "expect_workers": [one, ten]}]})
            command = [
                str(BIN / "dask"), "worker", cluster.address, "--nthreads", "1", "--name", one,
                "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0", "--no-nanny",
            ]  # fmt: skip
            policy = RestartPolicy(dask_worker={"name": one, "command": command}, stop_timeout=10, timeout=60)
            before = asyncio.run(serving(policy, check, config, f"dask/{one}", seen[f"dask/{one}"]))
            assert before is not None and before.key.startswith(f"worker:{seen[f'dask/{one}'].target}")
            w10_address = seen[f"dask/{ten}"].target

            w1.signal(signal.SIGSTOP)
            outcome = act(policy, check, config)
            assert outcome.ok, outcome.detail
            pids.update(p.pid for p in worker_processes(one))

            def rejoined() -> dict:
                now = observe(tmp_path, {"checks": [{**raw, "expect_workers": [one, ten]}]})
                w1_now = now.get(f"dask/{one}")
                return now if w1_now and "://" in w1_now.target and w1_now.target != seen[f"dask/{one}"].target else {}

            now = wait_until(rejoined, timeout=60, interval=0.5, what="w1 joining again")
            after = asyncio.run(serving(policy, check, config, f"dask/{one}", now[f"dask/{one}"]))
            assert after is not None and after.key != before.key and after.alive
            assert now[f"dask/{ten}"].target == w10_address and w10.alive()  # w10 untouched
            assert not w1.alive() or gone(w1.pid)
        finally:
            cluster.stop()


def test_a_docker_restart_changes_the_container_serving_and_says_which(docker: DockerEngine):
    """The Engine's own word: the container's Id and StartedAt; compose's service found by its labels."""
    labels = ("--label", "com.docker.compose.project=stack", "--label", "com.docker.compose.service=web")
    # As PID 1, a plain `sleep` ignores SIGTERM: the restart would wait its 10 s for the SIGKILL.
    container = docker.run(
        "stack-web-1", *labels, command=("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done")
    )
    config = Config.model_validate({"checks": [{"name": "web", "kind": "docker", "socket": docker.socket}]})
    check = config.checks[0]
    restart = RestartPolicy(docker="stack-web-1", timeout=60)
    compose = RestartPolicy(compose={"project": "stack", "service": "web"}, docker_socket=docker.socket)
    before = asyncio.run(serving(restart, check, config, "web", None))
    assert before is not None and before.key.startswith(f"container:{container}@") and before.alive
    assert before.started is not None and "container stack-web-1 started" in before.what
    assert asyncio.run(serving(compose, check, config, "web", None)) == before

    docker.docker("pause", container)
    paused = asyncio.run(serving(restart, check, config, "web", None))
    assert paused is not None and paused.key == before.key and not paused.alive
    docker.docker("unpause", container)

    outcome = act(restart, check, config)
    assert outcome.ok, outcome.detail
    assert outcome.instance is not None and outcome.instance.key != before.key
    after = asyncio.run(serving(restart, check, config, "web", None))
    assert after is not None and after.key == outcome.instance.key
    assert asyncio.run(serving(compose, check, config, "web", None)) == after
    docker.docker("stop", "-t", "0", container)  # a stopped container serves nothing
    assert asyncio.run(serving(restart, check, config, "web", None)) is NOTHING_RUNS


def test_dask_worker_restart_over_ssh_matches_the_name_exactly(tmp_path: Path):
    """The same over SSH (pkill/pgrep -f with the exact-name pattern, SIGKILL after stop_timeout)."""
    one, ten = f"{(w := unique())}1", f"{w}10"
    sshd = SSHServer(tmp_path / "sshd")
    w1 = Proc(stand_in(one, deaf=True), tmp_path / "w1.log")
    w10 = Proc(stand_in(ten), tmp_path / "w10.log")
    with killed_at_end() as pids:
        pids.update({w1.pid, w10.pid})
        try:
            wait_until(lambda: "ready" in w1.tail() and "ready" in w10.tail(), what="the stand-ins")
            w1.signal(signal.SIGSTOP)
            config = Config.model_validate(
                {"nodes": [sshd.node("box")], "checks": [{"name": "svc", "kind": "tcp", "port": free_port()}]}
            )
            policy = RestartPolicy(
                dask_worker={"name": one, "node": "box", "command": stand_in(one)}, stop_timeout=1, timeout=30
            )
            outcome = act(policy, config.checks[0], config)
            assert outcome.ok, outcome.detail
            new = wait_until(lambda: [p.pid for p in worker_processes(one)], what="the new stand-in over SSH")
            pids.update(new)
            assert len(new) == 1 and new[0] != w1.pid
            assert gone(w1.pid) or not w1.alive()
            assert w10.alive() and [p.pid for p in worker_processes(ten)] == [w10.pid]
        finally:
            w1.stop()
            w10.stop()
            sshd.stop()
