"""A real Dask scheduler and workers on 127.0.0.1, every process stopped by its PID."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from tests.helpers import Proc, free_port, wait_until

BIN = Path(sys.executable).parent


class DaskCluster:
    def __init__(self, workdir: Path, *, prometheus: bool = True) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.dashboard_port = free_port(), free_port()
        self.procs: list[Proc] = []
        self.workers: dict[str, Proc] = {}
        self.env: dict[str, str] = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        if not prometheus:
            # The scheduler's environment lacks prometheus_client: /metrics then holds only a comment.
            shim = workdir / "no-prometheus" / "prometheus_client"
            shim.mkdir(parents=True, exist_ok=True)
            (shim / "__init__.py").write_text(
                "raise ModuleNotFoundError('no prometheus_client here', name='prometheus_client')\n"
            )
            self.env["PYTHONPATH"] = str(shim.parent)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_scheduler(self) -> Proc:
        proc = Proc(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dashboard-address",
                f"127.0.0.1:{self.dashboard_port}",
                "--no-show",
            ],
            self.workdir / "scheduler.log",
            env=self.env,
        )
        self.procs.append(proc)
        self.scheduler = proc
        wait_until(lambda: self.identity(), timeout=30, what=f"dask scheduler ({proc.tail()})")
        return proc

    def start_worker(self, name: str, *, nanny: bool = False, wait: bool = True) -> Proc:
        argv = [
            str(BIN / "dask"),
            "worker",
            self.address,
            "--nthreads",
            "1",
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--dashboard-address",
            "127.0.0.1:0",
        ]
        if not nanny:
            argv.append("--no-nanny")
        proc = Proc(argv, self.workdir / f"worker-{name}.log", env=self.env)
        self.procs.append(proc)
        self.workers[name] = proc
        if wait:
            wait_until(lambda: name in self.worker_names(), timeout=30, what=f"worker {name} ({proc.tail()})")
        return proc

    def identity(self) -> dict:
        with urllib.request.urlopen(f"{self.dashboard}/json/identity.json", timeout=2) as resp:
            return json.load(resp)

    def worker_names(self) -> set[str]:
        try:
            return {str(w.get("name")) for w in self.identity()["workers"].values()}
        except OSError:
            return set()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
