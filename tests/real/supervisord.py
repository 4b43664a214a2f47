"""A real supervisord on 127.0.0.1 running the programs a test names; every pid it ran is stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import xmlrpc.client
from pathlib import Path
from typing import Any

import psutil

from tests.helpers import Proc, free_port, port_open, wait_until


class Supervisord:
    """Programs are not restarted by supervisord itself (autorestart=false): only the healer restarts them.
    A stop is SIGTERM to the program's group, SIGKILL after `stopwaitsecs` (a SIGSTOP'd one needs it)."""

    def __init__(self, workdir: Path, programs: dict[str, str], *, stopwaitsecs: int = 2) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.port = workdir, free_port()
        self.seen: dict[int, float] = {}  # every pid a program ran with, and its start time (pid reuse guard)
        sections = "".join(
            f"""
[program:{name}]
command={command}
autostart=true
autorestart=false
startsecs=1
stopwaitsecs={stopwaitsecs}
stopasgroup=true
killasgroup=true
"""
            for name, command in programs.items()
        )
        conf = workdir / "supervisord.conf"
        conf.write_text(f"""\
[supervisord]
nodaemon=true
logfile={workdir / "supervisord.log"}
pidfile={workdir / "supervisord.pid"}
childlogdir={workdir}

[inet_http_server]
port=127.0.0.1:{self.port}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
{sections}""")
        self.proc = Proc([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], workdir / "sv.out")
        try:
            wait_until(lambda: port_open(self.port), timeout=30, what=f"supervisord ({self.proc.tail()})")
            for name in programs:
                wait_until(lambda n=name: self.running(n), timeout=30, what=f"program {name} running")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/RPC2"

    def info(self, program: str) -> dict[str, Any]:
        proxy = xmlrpc.client.ServerProxy(self.url, allow_none=True)
        info = proxy.supervisor.getProcessInfo(program)
        assert isinstance(info, dict)
        if info.get("pid"):
            self._note(int(info["pid"]))
        return info

    def running(self, program: str) -> bool:
        return self.info(program).get("statename") == "RUNNING"

    def pid(self, program: str) -> int:
        info = self.info(program)
        assert info.get("statename") == "RUNNING" and info.get("pid"), info
        return int(info["pid"])

    def _note(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self.seen.setdefault(pid, psutil.Process(pid).create_time())

    def stop(self) -> None:
        """supervisord stops its programs as it exits; any it left is killed by its PID (SIGCONT first)."""
        self.proc.stop(timeout=20)
        for pid, created in self.seen.items():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if psutil.Process(pid).create_time() != created:
                    continue  # the pid went to another process meanwhile
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
