"""A node that answers the SSH probe's script with something else, through a real sshd on loopback.

The key's `command="..."` in authorized_keys makes sshd run another program instead of the
probe's script: one that prints forever, prints bytes that are not UTF-8, prints NaN and
absurd numbers, or drips. Each is an observation within the node's timeout.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from clusterwatch.model import Status
from tests.conftest import observe
from tests.real.sshd import SSHServer

REPLIES = {
    "endless": "exec yes end=1",
    "garbage": "printf '\\377\\376\\000garbage\\n'; head -c 20000 /dev/zero | tr '\\0' '\\377'; printf '\\nend=1\\n'",
    "nan": (
        "printf 'nproc=0\\nloadavg=nan 1 1\\nMemTotal=99999999999999999999999\\nMemAvailable=\\262\\n"
        "stat1=cpu 1 2 3 nan\\nstat2=cpu 9 9 9 inf\\ndf=/ 1 nan 2\\ndf=/ 100 50 50\\n"
        'battery={"percentage": NaN, "status": ["CHARGING"]}\\nend=1\\n\''
    ),
    "drip": "for i in $(seq 600); do printf x; sleep 0.1; done",
}
EXPECTED = {
    "endless": (Status.UNKNOWN, "node printed more than 65536 bytes"),
    "garbage": (Status.UNKNOWN, "reported nothing readable"),
    "nan": (Status.UNKNOWN, "battery unreadable"),
    "drip": (Status.CRITICAL, "timed out after 2s"),
}


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = SSHServer(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.mark.parametrize("case", list(REPLIES))
def test_node_that_answers_something_else(tmp_path: Path, sshd: SSHServer, case: str):
    script = tmp_path / "reply.sh"
    script.write_text(f"#!/bin/sh\n{REPLIES[case]}\n")
    script.chmod(0o755)
    public = (sshd.dir / "client.pub").read_text().strip()
    (sshd.dir / "authorized_keys").write_text(f'command="{script}" {public}\n')  # read by sshd at each login
    started = time.monotonic()
    obs = observe(tmp_path, {"nodes": [{**sshd.node(), "timeout": "2s"}]})["box"]
    assert time.monotonic() - started < 10
    status, words = EXPECTED[case]
    assert obs.status is status and words in obs.message, obs.message
    assert "\n" not in obs.message and all(math.isfinite(v) for v in obs.metrics.values())
    if case == "nan":
        assert obs.metrics == {"cpus": 1, "disk_percent": 50.0}
