"""Opt-in: the openwebui probe against a real Open WebUI (pip `open-webui`, 2.9 GB, ~45 s to start).

Skipped unless CLUSTERWATCH_SLOW=1 and OPEN_WEBUI points at its `open-webui` command; see the README.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clusterwatch.model import Status
from tests.conftest import observe
from tests.helpers import Proc, free_port, port_open, wait_until

pytestmark = pytest.mark.skipif(
    os.environ.get("CLUSTERWATCH_SLOW") != "1" or not os.environ.get("OPEN_WEBUI"),
    reason="slow opt-in test: set CLUSTERWATCH_SLOW=1 and OPEN_WEBUI=/path/to/open-webui",
)


def test_real_open_webui(tmp_path: Path):
    port = free_port()
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "WEBUI_AUTH": "False",
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "ENABLE_OLLAMA_API": "False",
    }
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
