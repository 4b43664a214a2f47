"""`clusterwatch run` as a real process, and its SQLite store read the way a person would."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import ROOT, Proc, free_port, wait_until

HELPER = str(ROOT / "tests" / "real" / "restart_helper.py")


def helper(*args: str) -> list[str]:
    return [sys.executable, HELPER, *args]


def kill_pidfile(path: Path) -> None:
    if not path.exists():
        return
    for line in path.read_text().split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line), signal.SIGKILL)
    path.unlink()


class Daemon:
    def __init__(self, tmp: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.db_path = tmp / "state.db"
        self.web_port = free_port()
        config = {
            "store": {"path": str(self.db_path)},
            "logs": {"dir": str(tmp / "logs"), "level": "debug"},
            "web": {"listen": f"127.0.0.1:{self.web_port}"},
            **config,
        }
        self.config_path = tmp / "clusterwatch.yaml"
        self.write(config)
        self.env = env or {}
        self.proc: Proc | None = None
        self.runs = 0

    def write(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    def start(self, *extra: str) -> Proc:
        self.runs += 1
        self.proc = Proc(
            [sys.executable, "-m", "clusterwatch", "run", "-c", str(self.config_path), *extra],
            self.tmp / f"daemon-{self.runs}.log",
            env=self.env,
        )
        return self.proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=10)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("daemon-*.log")))

    def query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        if not self.db_path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # not migrated yet
        finally:
            conn.close()

    def events(self, kind: str | None = None, entity: str | None = None) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM events WHERE 1=1", []
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if entity:
            sql += " AND entity = ?"
            args.append(entity)
        return self.query(sql + " ORDER BY id", *args)

    def wait_event(self, kind: str, entity: str | None = None, timeout: float = 30, count: int = 1) -> list:
        return wait_until(
            lambda: len(rows := self.events(kind, entity)) >= count and rows,
            timeout=timeout,
            interval=0.2,
            what=f"{count} {kind} event(s) for {entity or 'any'}\n{self.log()[-3000:]}",
        )

    def actions(self, check: str | None = None) -> list[sqlite3.Row]:
        if check:
            return self.query("SELECT * FROM actions WHERE check_name = ? ORDER BY id", check)
        return self.query("SELECT * FROM actions ORDER BY id")

    def entity(self, name: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM entities WHERE name = ?", name)
        return rows[0] if rows else None
