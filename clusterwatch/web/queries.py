"""Reads for the web: history from the store (on a read-only connection, in a thread), and an
uptime cache recomputed in the background so pages never scan months of rollups."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from clusterwatch.store.sqlite import connect

log = logging.getLogger("clusterwatch.web")
WINDOWS = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
UPTIME_EVERY = 60.0
MAX_LIMIT = 1000


class History:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self.uptime: dict[str, dict[str, float | None]] = {}
        self._task: asyncio.Task[None] | None = None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, readonly=True)
        return conn

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn().execute(sql, args).fetchall()]

    async def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.rows, sql, args)

    async def page(
        self, table: str, *, limit: int, before: int | None, where: list[str], args: list[Any], order: str = "id"
    ) -> dict[str, Any]:
        """Cursor pagination: newest first; `next` is the cursor for the following page."""
        clauses = list(where)
        if before is not None:
            clauses.append(f"{order} < ?")
            args = [*args, before]
        sql = (
            f"SELECT {order} AS cursor, * FROM {table}"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + f" ORDER BY {order} DESC LIMIT ?"
        )
        items = await self.query(sql, (*args, limit + 1))
        more = len(items) > limit
        items = items[:limit]
        for item in items:
            for key in ("metrics", "details", "matchers", "incidents"):
                if isinstance(item.get(key), str):
                    with contextlib.suppress(ValueError):
                        item[key] = json.loads(item[key])
        return {"items": items, "next": items[-1]["cursor"] if more and items else None}

    def _compute_uptime(self) -> dict[str, dict[str, float | None]]:
        now = time.time()
        result: dict[str, dict[str, float | None]] = {}
        for window, seconds in WINDOWS.items():
            for row in self._conn().execute(
                "SELECT entity, SUM(ok) AS ok, SUM(count) AS n FROM rollup_hour WHERE ts >= ? GROUP BY entity",
                (now - seconds,),
            ):
                result.setdefault(row["entity"], {})[window] = 100.0 * row["ok"] / row["n"] if row["n"] else None
        return result

    async def refresh_uptime(self) -> None:
        try:
            self.uptime = await asyncio.to_thread(self._compute_uptime)
        except sqlite3.Error:
            log.exception("uptime refresh failed")

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.refresh_uptime()
                await asyncio.sleep(UPTIME_EVERY)

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
