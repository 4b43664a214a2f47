"""The monitor's side of a push, in process with a real SQLite store: what is acked is what is written."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from clusterwatch.agent import protocol
from clusterwatch.agent.hub import Refused
from clusterwatch.config.loader import load_config
from clusterwatch.daemon import Monitor
from clusterwatch.store import writer

CONFIG = """
store: {{path: {db}}}
web: {{enabled: false}}
nodes:
  - {{name: phone-1, agent: true, expect_dask_worker: false}}
checks:
  - {{name: web-phone-1, kind: tcp, port: 9, node: phone-1}}
"""


def push(seq: int, at: float) -> protocol.Push:
    wire = protocol.WireObservation(name="web-phone-1", kind="tcp", status="ok", message=f"round {seq}")
    round_ = protocol.Round(seq=seq, at=at, check="web-phone-1", observations=[wire])
    return protocol.Push(node="phone-1", sent_at=at, rounds=[round_])


def test_a_push_the_store_could_not_write_is_not_acked_and_is_filed_on_the_resend(tmp_path: Path, monkeypatch):
    db = tmp_path / "state.db"
    path = tmp_path / "clusterwatch.yaml"
    path.write_text(CONFIG.format(db=db))
    monitor = Monitor(load_config(str(path)), str(path))

    async def scenario() -> None:
        monitor.store.open()
        monitor.agents.open()
        monitor.agents.registry.enroll("phone-1")
        now = time.time()
        monkeypatch.setattr(writer, "QUEUE_MAX", 0)  # the writer is hopelessly behind: every write is dropped
        with pytest.raises(Refused) as refused:
            await monitor.agents.push("phone-1", "127.0.0.1", push(1, now))
        assert refused.value.status == 503
        monkeypatch.setattr(writer, "QUEUE_MAX", 100_000)
        answer = await monitor.agents.push("phone-1", "127.0.0.1", push(1, now))  # the agent sends it again
        assert answer.accepted == 1
        again = await monitor.agents.push("phone-1", "127.0.0.1", push(1, now))  # its answer was lost: resent
        assert again.accepted == 1

    try:
        asyncio.run(scenario())
    finally:
        monitor.store.close()
        monitor.agents.registry.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM observations WHERE entity = 'web-phone-1'").fetchone()[0] == 1
        assert conn.execute("SELECT acked, last_addr FROM agents WHERE name = 'phone-1'").fetchone() == (1, "127.0.0.1")
    finally:
        conn.close()
