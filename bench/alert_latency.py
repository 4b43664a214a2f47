"""Time from a hard state change to the alert's arrival at a local webhook, with group_wait: 0.

Goal (issue 4): under 200 ms p99. Run: `.venv/bin/python bench/alert_latency.py [--transitions 60]`
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import free_port, port_open  # noqa: E402
from tests.real.receivers import WebhookReceiver  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=60, help="down and up transitions to measure")
    args = parser.parse_args()
    receiver = WebhookReceiver()
    server = receiver.serve()
    service_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "state.db"
        config = {
            "interval": "200ms",
            "fall": 1,
            "rise": 1,
            "store": {"path": str(db)},
            "alerts": {
                "channels": {"hook": f"json://127.0.0.1:{server.port}/alerts"},
                "group_wait": "0s",
                "routes": [{"channels": ["hook"], "min_severity": "info"}],
            },
            "checks": [{"name": "svc", "kind": "tcp", "port": service_port}],
        }
        (Path(tmp) / "c.yaml").write_text(yaml.safe_dump(config))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "clusterwatch", "run", "-c", str(Path(tmp) / "c.yaml")], stderr=subprocess.DEVNULL
        )
        service = None
        try:
            time.sleep(2)
            for i in range(args.transitions):
                if i % 2 == 0:
                    service = subprocess.Popen(
                        [sys.executable, "-m", "http.server", str(service_port), "--bind", "127.0.0.1"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    while not port_open(service_port):
                        time.sleep(0.01)
                else:
                    assert service is not None
                    service.send_signal(signal.SIGKILL)
                    service.wait()
                time.sleep(1.2)  # longer than group_wait + a probe: each transition is its own alert
            time.sleep(2)
        finally:
            daemon.terminate()
            daemon.wait(10)
            if service is not None and service.poll() is None:
                service.kill()
        conn = sqlite3.connect(db)
        changes = conn.execute(
            "SELECT ts, new FROM events WHERE kind IN ('incident_opened', 'incident_closed') ORDER BY ts"
        ).fetchall()
        conn.close()
    server.stop()
    arrivals = [hit.at for hit in receiver.hits]
    latencies = []
    for (changed, _), arrived in zip(changes, arrivals, strict=False):
        latencies.append((arrived - changed) * 1000)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"alert latency, hard state change -> webhook arrival, group_wait 0, {len(latencies)} alerts "
        f"({len(changes)} transitions, {len(arrivals)} arrivals), {os.cpu_count()} cpus"
    )
    print(f"  p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")
    print(f"  goal: p99 < 200 ms -> {'met' if p99 < 200 else 'NOT met'}")


if __name__ == "__main__":
    main()
