"""`clusterwatch demo` as a newcomer runs it: the URL, a worker killed, the restart, Ctrl-C cleans up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.helpers import Proc, free_port, wait_until


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def test_demo_shows_failure_restart_recovery_and_cleans_up(tmp_path: Path):
    port = free_port()
    demo = Proc([sys.executable, "-m", "clusterwatch", "demo", "--web-port", str(port)], tmp_path / "demo.log")
    try:
        wait_until(lambda: "Ctrl-C" in demo.log.read_text(), timeout=60, what="the demo's instructions")
        text = demo.log.read_text()
        assert f"dashboard:  http://127.0.0.1:{port}/" in text
        pid = int(re.search(r"kill -9 (\d+)", text).group(1))
        wait_until(
            lambda: (
                {c["name"]: c["status"] for c in get(f"http://127.0.0.1:{port}/api/v1/status")["checks"]}.get("dask/w1")
                == "ok"
            ),
            timeout=30,
            what="w1 healthy",
        )
        os.kill(pid, signal.SIGKILL)
        action = wait_until(
            lambda: get(f"http://127.0.0.1:{port}/api/v1/actions")["items"], timeout=40, what="the healer's restart"
        )[0]
        assert action["action"] == "dask_worker" and action["target"] == "dask_worker:local/w1"
        wait_until(
            lambda: (
                {c["name"]: c["status"] for c in get(f"http://127.0.0.1:{port}/api/v1/status")["checks"]}.get("dask/w1")
                == "ok"
            ),
            timeout=40,
            what="w1 healthy again",
        )
        config = re.search(r"config:\s+(\S+)", text).group(1)
        address = re.search(r"scheduler: (tcp://[\d.:]+)", Path(config).read_text()).group(1)
    finally:
        demo.signal(signal.SIGINT)  # Ctrl-C
        demo.popen.wait(20)
        demo.stop()
    assert "everything it started is gone" in demo.log.read_text()
    left = subprocess.run(
        ["pgrep", "-f", f"[d]ask (worker|scheduler).*{address.rsplit(':', 1)[1]}"], capture_output=True, text=True
    )
    assert left.stdout.strip() == "", left.stdout
    assert not Path(config).exists()
