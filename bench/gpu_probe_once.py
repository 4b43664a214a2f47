"""The GPU probe once on this machine, everything it sees as JSON: for a run by hand on a machine with NVIDIA GPUs.

The tests drive the GPU probe through a fake NVML; this shows what a real driver answers: which figures
it gives and which it does not ("not_read"), XIDs watched, processes on each GPU, how long a survey takes.
Several rounds (`--rounds 3 --every 10`) keep one NVML session, so XIDs between rounds are counted.
No GPU or no driver prints "not present", as the node check reports it.

Run: `.venv/bin/python bench/gpu_probe_once.py [--rounds N] [--every SECONDS] [--xid-window 1h] [--expect-gpus N]`
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from importlib import metadata
from typing import Any

from clusterwatch.config.durations import parse_duration
from clusterwatch.config.schema import Config, NodeCheck
from clusterwatch.engine.once import run_probe
from clusterwatch.probes import gpu
from clusterwatch.probes.base import ProbeContext, new_http_session


async def _round(check: NodeCheck) -> dict[str, Any]:
    """The node check's GPU observations, as `clusterwatch check --json` would carry them."""
    async with new_http_session() as session:
        started = time.perf_counter()
        observed = await run_probe(check, ProbeContext(config=Config(), http=session))
        elapsed = time.perf_counter() - started
    system = next((o for o in observed if o.name == check.name), None)
    return {
        "probe_s": round(elapsed, 3),
        "not_present": system.details.get("gpu") if system else None,
        "observations": [o.to_dict() for o in observed if o.name.startswith(f"{check.name}/gpu")],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between rounds")
    parser.add_argument("--xid-window", default="1h")
    parser.add_argument("--expect-gpus", type=int, default=None)
    args = parser.parse_args()
    window = parse_duration(args.xid_window)
    check = NodeCheck(
        name="system", kind="node", cpu_sample=0.1, timeout=30, xid_window=window, expect_gpus=args.expect_gpus
    )
    rounds = []
    for number in range(args.rounds):
        if number:
            time.sleep(args.every)
        rounds.append(asyncio.run(_round(check)))
    started = time.perf_counter()
    raw = gpu.survey(xid_window=window, expect_gpus=args.expect_gpus)  # the same session: what the rounds left
    survey_s = time.perf_counter() - started
    try:
        version = metadata.version("nvidia-ml-py")
    except metadata.PackageNotFoundError:
        version = None
    report = {
        "nvidia_ml_py": version,
        "rounds": rounds,
        "survey_s": round(survey_s, 4),
        "survey": dataclasses.asdict(raw),
    }
    json.dump(report, sys.stdout, indent=2, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
