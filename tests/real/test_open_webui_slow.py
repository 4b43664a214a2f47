"""Opt-in: the openwebui probe and the healer against a real Open WebUI (pip `open-webui`, ~3-7 GB, 20-45 s to
start). Skipped unless CLUSTERWATCH_SLOW=1 and OPEN_WEBUI points at its `open-webui` command; see the README.

Under `clusterwatch run` with a stop-then-start restart: kill -9 and SIGSTOP are each healed by a new
process, and credited because that new process is the one on the port. The timeline is printed (-s)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterwatch.model import Status
from tests.conftest import observe
from tests.helpers import ROOT, Proc, free_port, port_open, wait_until
from tests.real.daemon import Daemon

pytestmark = pytest.mark.skipif(
    os.environ.get("CLUSTERWATCH_SLOW") != "1" or not os.environ.get("OPEN_WEBUI"),
    reason="slow opt-in test: set CLUSTERWATCH_SLOW=1 and OPEN_WEBUI=/path/to/open-webui",
)
CTL = str(ROOT / "tests" / "real" / "open_webui_ctl.py")


def test_real_open_webui(tmp_path: Path):
    port = free_port()
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "WEBUI_AUTH": "False",
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "ENABLE_OLLAMA_API": "False",
        "WEBUI_SECRET_KEY": "test-only",  # else it writes .webui_secret_key where it was started
    }
    (tmp_path / "data").mkdir()
    proc = Proc(
        [os.environ["OPEN_WEBUI"], "serve", "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "open-webui.log",
        env=env,
    )
    config = {"checks": [{"name": "webui", "kind": "openwebui", "url": f"http://127.0.0.1:{port}"}]}
    try:
        wait_until(lambda: port_open(port), timeout=300, interval=1, what="Open WebUI to listen")
        healthy = wait_until(
            lambda: (o := observe(tmp_path, config)["webui"]).status is Status.OK and o,
            timeout=120,
            interval=1,
            what="Open WebUI to be healthy",
        )
        assert healthy.message.startswith("Open WebUI ") and "database ok" in healthy.message
    finally:
        proc.stop(timeout=20)
    down = observe(tmp_path, config)["webui"]
    assert down.status is Status.CRITICAL and "connection refused" in down.message


def _pid(pidfile: Path) -> int:
    return int(pidfile.read_text().split()[0])


def test_real_open_webui_healed_by_stop_then_start(tmp_path: Path):
    port, data, pidfile = free_port(), tmp_path / "data", tmp_path / "webui.pid"
    data.mkdir()
    binary, log = os.environ["OPEN_WEBUI"], str(tmp_path / "open-webui.log")
    start = [sys.executable, CTL, "start", str(pidfile), binary, str(port), str(data), log]
    stop = [sys.executable, CTL, "stop", str(pidfile)]
    daemon = Daemon(
        tmp_path,
        {
            "interval": "2s",
            "healing": {"start_delay": "40s"},  # Open WebUI starts with the monitor, as at boot
            "checks": [
                {
                    "name": "webui",
                    "kind": "openwebui",
                    "url": f"http://127.0.0.1:{port}",
                    "data_dir": str(data),
                    "timeout": "5s",
                    "fall": 2,
                    "restart": {"command": start, "stop": stop, "stop_timeout": "10s", "backoff": "5s"},
                }
            ],
        },
    )
    timeline: list[str] = []
    t0 = time.time()

    def mark(what: str) -> None:
        timeline.append(f"{time.time() - t0:7.1f}s  {what}")

    try:
        subprocess.run(start, check=True, timeout=60)  # the restart's own start command, as the healer runs it
        mark(f"Open WebUI started, pid {_pid(pidfile)}")
        daemon.start()
        wait_until(lambda: (e := daemon.entity("webui")) is not None and e["status"] == "ok", timeout=300,
                   interval=1, what="Open WebUI healthy under the monitor")
        mark(f"healthy: {daemon.entity('webui')['message']}")
        # start_delay held restarts back while it loaded: what follows is the healer at work, not that delay
        wait_until(lambda: time.time() - t0 > 42, timeout=60, interval=0.5, what="start_delay to pass")
        for n, (how, sig) in enumerate((("kill -9", signal.SIGKILL), ("SIGSTOP", signal.SIGSTOP)), start=1):
            old = _pid(pidfile)
            os.kill(old, sig)
            mark(f"{how} pid {old}")
            [done] = daemon.wait_event("remediation_succeeded", "webui", timeout=300, count=n)[-1:]
            action = daemon.actions("webui")[-1]
            mark(f"{action['outcome']} after {action['duration']:.1f}s: {action['detail']}")
            for row in daemon.events(entity="webui")[-6:]:
                timeline.append(f"         event {row['kind']}: {row['message'][:150]}")
            assert action["outcome"] == "succeeded", action["detail"]
            assert _pid(pidfile) != old and f"pid {_pid(pidfile)}" in action["detail"], "credited to its own process"
            assert done["message"].startswith("command:")
    finally:
        print("\n".join(["", "timeline:", *timeline]))
        (tmp_path / "timeline.txt").write_text("\n".join(timeline))
        daemon.stop()
        with contextlib.suppress(Exception):
            os.kill(_pid(pidfile), signal.SIGCONT)
            os.killpg(_pid(pidfile), signal.SIGKILL)
