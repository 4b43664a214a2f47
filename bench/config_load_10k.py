"""Loading a 10,000-check config: plain HTTP checks, and a richer mix (timeouts, headers, restart
policies, dependencies). Prints CPU time per load (median of 5) and the peak memory.
Run: `.venv/bin/python bench/config_load_10k.py`.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from clusterwatch.config.loader import load_config

CHECKS = 10_000


def plain(n: int) -> dict[str, Any]:
    return {
        "interval": "10s",
        "concurrency": 500,
        "store": {"path": "/tmp/clusterwatch-bench.db"},
        "checks": [
            {"name": f"t{i}", "kind": "http", "url": f"http://127.0.0.1:{20000 + i % 50}/health?i={i}"}
            for i in range(n)
        ],
    }


def rich(n: int) -> dict[str, Any]:
    checks = []
    for i in range(n):
        check: dict[str, Any] = {
            "name": f"t{i}",
            "kind": "http",
            "url": f"http://127.0.0.1:{20000 + i % 50}/health?i={i}",
            "interval": "30s",
            "timeout": "2s",
            "latency_warning": "500ms",
            "expect_status": [200, 204],
            "headers": {"X-Id": str(i)},
        }
        if i % 10 == 0:
            check["restart"] = {"command": ["/bin/true", str(i)], "timeout": "30s", "window": "10m", "backoff": "5s"}
        else:
            check["depends_on"] = [f"t{i - i % 10}"]
        checks.append(check)
    return {"interval": "10s", "store": {"path": "/tmp/clusterwatch-bench.db"}, "checks": checks}


def main() -> None:
    for label, data in (("plain", plain(CHECKS)), ("rich", rich(CHECKS))):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "c.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            times = []
            for _ in range(5):
                started = time.process_time()
                loaded = load_config(str(path), env={}, cwd=tmp)
                times.append(time.process_time() - started)
            assert len(loaded.config.checks) == CHECKS
            print(
                f"{label}: {path.stat().st_size / 1e6:.2f} MB, CPU per load median {statistics.median(times):.3f} s "
                f"(min {min(times):.3f}, max {max(times):.3f})"
            )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
