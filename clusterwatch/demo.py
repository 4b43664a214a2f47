"""`clusterwatch demo`: a real local Dask cluster (a scheduler and two workers), watched and healed,
with the dashboard, so a newcomer sees a failure, the restart and the recovery in a minute."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

WORKERS = ("w1", "w2")


def _free_port(preferred: int | None = None) -> int:
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def _dask() -> list[str] | None:
    script = Path(sys.executable).parent / "dask"
    if script.exists():
        return [str(script)]
    found = shutil.which("dask")
    return [found] if found else None


def _wait_port(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.3)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def _stop_all(pids: list[int], address: str, timeout: float = 10.0) -> None:
    """SIGTERM to what the demo started and to every worker still talking to its scheduler (the ones the
    healer restarted run detached), SIGKILL to whatever has not exited after `timeout`, and wait for that:
    the demo says "everything it started is gone" only once it is."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs[pid] = psutil.Process(pid)
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if address in cmdline and "worker" in cmdline:
            procs.setdefault(proc.pid, proc)
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)


def run(web_port: int | None = None) -> int:
    dask = _dask()
    if dask is None:
        print(
            "clusterwatch demo needs Dask: pip install 'dask[distributed]' (make test installs it in .venv)",
            file=sys.stderr,
        )
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="clusterwatch-demo-"))
    scheduler_port, dashboard_port = _free_port(), _free_port()
    web_port = web_port or _free_port(9877)
    address = f"tcp://127.0.0.1:{scheduler_port}"
    log = open(workdir / "cluster.log", "ab")  # noqa: SIM115 - closed at the end
    started: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        started.append(proc)
        return proc

    worker_ports = {name: _free_port() for name in WORKERS}

    def worker_argv(name: str) -> list[str]:
        return [
            *dask,
            "worker",
            address,
            "--name",
            name,
            "--nthreads",
            "1",
            "--no-nanny",
            "--host",
            "127.0.0.1",
            "--dashboard-address",
            f"127.0.0.1:{worker_ports[name]}",
        ]

    try:
        spawn(
            [
                *dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(scheduler_port),
                "--dashboard-address",
                f"127.0.0.1:{dashboard_port}",
                "--no-show",
            ]
        )
        if not _wait_port(dashboard_port):
            print(f"the Dask scheduler did not start; see {workdir / 'cluster.log'}", file=sys.stderr)
            return 1
        pids = {name: spawn(worker_argv(name)).pid for name in WORKERS}
        for name in WORKERS:
            _wait_port(worker_ports[name])
        config = {
            "interval": "1s",
            "store": {"path": str(workdir / "state.db")},
            "web": {"listen": f"127.0.0.1:{web_port}"},
            "checks": [
                {
                    "name": "dask",
                    "kind": "dask",
                    "scheduler": address,
                    "dashboard": f"http://127.0.0.1:{dashboard_port}",
                    "min_workers": 2,
                    "expect_workers": list(WORKERS),
                },
                *(
                    {
                        "name": f"worker-{name}",
                        "kind": "http",
                        "url": f"http://127.0.0.1:{worker_ports[name]}/health",
                        "restart": {
                            "dask_worker": {"name": name, "command": worker_argv(name)},
                            "verify_timeout": "30s",
                        },
                    }
                    for name in WORKERS
                ),
                {"name": "system", "kind": "node"},
            ],
        }
        path = workdir / "clusterwatch.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        print("clusterwatch demo: a real Dask cluster (a scheduler and two workers) on 127.0.0.1, watched and healed.")
        print(f"  dashboard:  http://127.0.0.1:{web_port}/")
        print(f"  try:        kill -9 {pids['w1']}    (worker w1: it turns critical, is restarted, and recovers)")
        print(f"  config:     {path}")
        print("  Ctrl-C stops everything.", flush=True)
        from clusterwatch import logs
        from clusterwatch.config.loader import load_config
        from clusterwatch.daemon import Monitor

        loaded = load_config(str(path))
        logs.setup(level="info", redactor=loaded.redactor)
        asyncio.run(Monitor(loaded, str(path)).run())
        return 0
    finally:
        _stop_all([proc.pid for proc in started], address)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
        print("demo stopped; everything it started is gone.")
