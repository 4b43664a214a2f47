from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import Proc, free_port, port_open, wait_until
from tests.real.dask_cluster import BIN, DaskCluster
from tests.real.docker_engine import DockerEngine


@pytest.fixture(scope="session")
def docker_engine():
    engine = DockerEngine()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def docker(docker_engine: DockerEngine):
    yield docker_engine
    docker_engine.remove_all()


@pytest.fixture
def supervised_worker(tmp_path: Path):
    """A real Dask scheduler, and a worker run by a real supervisord (which does not restart it itself)."""
    cluster = DaskCluster(tmp_path / "dask")
    cluster.start_scheduler()
    port = free_port()
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"""\
[supervisord]
nodaemon=true
logfile={tmp_path / "supervisord.log"}
pidfile={tmp_path / "supervisord.pid"}
childlogdir={tmp_path}

[inet_http_server]
port=127.0.0.1:{port}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:dask-worker-w1]
command={BIN / "dask"} worker {cluster.address} --name w1 --nthreads 1 --host 127.0.0.1 --no-nanny
autostart=true
autorestart=false
startsecs=1
stopasgroup=true
killasgroup=true
""")
    supervisord = Proc([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], tmp_path / "sv.out")
    try:
        wait_until(lambda: port_open(port), what="supervisord")
        wait_until(lambda: "w1" in cluster.worker_names(), timeout=30, what="the supervised worker")
        yield cluster, f"http://127.0.0.1:{port}/RPC2"
    finally:
        supervisord.stop(timeout=15)
        cluster.stop()
