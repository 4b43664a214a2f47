"""What a monitor that does not use a feature does not load: pynvml without NVIDIA's library, aiodocker
without a Docker socket, prometheus_client until /metrics is scraped (each one to two megabytes of RSS
on a monitor that idles at a few tens). Each is loaded, and works, the moment the feature is used.

Real processes: a `clusterwatch run` with the five default checks (its Docker socket a path that does
not exist, its web on a free loopback port), read from inside by a small driver that starts it."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from clusterwatch.probes import gpu

NO_NVML = "no NVIDIA GPU driver (NVML Shared Library Not Found)"


def _nvml_here() -> bool:
    try:
        ctypes.CDLL(gpu.NVML_LIBRARY)
    except OSError:
        return False
    return True


def _python(code: str, *args: str, timeout: float = 120) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


SURVEY = """
import json, sys
from clusterwatch.probes import gpu
if len(sys.argv) > 1:
    gpu.NVML_LIBRARY = sys.argv[1]
found = gpu.survey(watch=gpu.Watch())
print(json.dumps({"pynvml": "pynvml" in sys.modules, "reason": found.reason, "present": found.present}))
"""


def test_a_machine_without_nvml_never_imports_pynvml() -> None:
    seen = _python(SURVEY)
    if _nvml_here():  # a GPU machine: NVML is read as ever
        assert seen["pynvml"]
        return
    assert seen == {"pynvml": False, "reason": NO_NVML, "present": False}


def test_where_the_library_loads_pynvml_is_imported_and_asked() -> None:
    """A library that loads (libc stands in for NVIDIA's here): pynvml is imported and NVML is asked; on a
    machine without the driver pynvml's own init says so, in the words the check always gave."""
    seen = _python(SURVEY, "libc.so.6")
    assert seen["pynvml"]
    if not _nvml_here():
        assert seen == {"pynvml": True, "reason": NO_NVML, "present": False}


DRIVER = """
import json, os, signal, sys, threading, time, urllib.error, urllib.request
config, out, url = sys.argv[1:4]
LAZY = ("pynvml", "aiodocker", "prometheus_client")

def watch():
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
                    health = json.load(resp)
            except urllib.error.HTTPError as exc:
                health = json.load(exc)
            except OSError:
                health = {}
            if health.get("entities", 0) >= 5:
                break
            time.sleep(0.2)
        idle = {name: name in sys.modules for name in LAZY}
        with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
            body = resp.read().decode()
        scraped = {name: name in sys.modules for name in LAZY}
        report = {"health": health, "idle": idle, "scraped": scraped, "metrics_ok": "clusterwatch_probes" in body}
        with open(out, "w") as f:
            json.dump(report, f)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
from clusterwatch.cli import main
sys.exit(main(["run", "-c", config]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_idle_monitor_loads_prometheus_client_at_the_first_scrape(tmp_path: Path) -> None:
    port = _free_port()
    config = {
        "interval": "2s",
        "store": {"path": str(tmp_path / "state.db")},
        "web": {"listen": f"127.0.0.1:{port}"},
        "checks": [
            {"name": "docker", "kind": "docker", "socket": str(tmp_path / "no-docker.sock")},
            {"name": "dask", "kind": "dask"},
            {"name": "ollama", "kind": "ollama"},
            {"name": "webui", "kind": "openwebui"},
            {"name": "system", "kind": "node"},
        ],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "report.json"
    with open(tmp_path / "monitor.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(tmp_path / "c.yaml"), str(out), f"http://127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        proc.wait(150)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert out.exists(), (tmp_path / "monitor.log").read_text()[-3000:]
    report = json.loads(out.read_text())
    assert report["health"].get("entities", 0) >= 5, report
    assert report["idle"] == {"pynvml": _nvml_here(), "aiodocker": False, "prometheus_client": False}, report
    assert report["scraped"]["prometheus_client"] and report["metrics_ok"], report
