"""A server that answers a probe's requests in the worst ways a broken or hostile service does.

One `HostileService(kind, case)` answers every path the `kind` of probe asks for (Dask's
`/health`, `/json/identity.json`, `/json/counts.json`, `/metrics`; Ollama's `/api/*`; Open
WebUI's `/health`, `/health/db`, `/api/version`; any path for `http`) with one `case`:

- `nan`: the service's real shapes, with NaN and ±Infinity where numbers go (legal for
  Python's json and for Prometheus text, which a Python service such as Dask writes);
- `deep`: JSON nested 50,000 levels deep;
- `shapes`: lists where objects go, strings where numbers go, objects where names go;
- `garbage`: bytes that are neither JSON nor UTF-8, labelled application/json;
- `endless`: a chunked body that never ends (bounded here at 256 MiB);
- `drip`: headers at once, then one byte every 0.1 s (bounded here at 60 s).

Every loop a handler runs is bounded, so a client that went away leaves nothing running.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

CASES = ("nan", "deep", "shapes", "garbage", "endless", "drip")
NAN, INF = float("nan"), float("inf")
DEEP = b"[" * 50_000 + b"]" * 50_000
GARBAGE = b"\xff\xfe\x00{\x80\xc3(\xa0\xa1" + bytes(range(256)) * 8 + b"\xed\xa0\x80\xf8\x88\x80\x80\x80"
_CHUNK = b"[" + b"0," * 32_767  # 64 KiB of a JSON array that never closes
_MAX_CHUNKS = 4096  # 256 MiB: far past any probe's max_body
_MAX_DRIPS = 600  # one byte every 0.1 s for at most 60 s


def _json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # writes NaN and Infinity literally


def _worker(address: str, **fields: Any) -> dict[str, Any]:
    return {address: {"id": "w", "host": "127.0.0.1", "nanny": None, "services": {"dashboard": 1}, **fields}}


# The real shapes (cluster-services.md), with non-finite numbers wherever a number goes.
NAN_ANSWERS: dict[str, dict[str, bytes]] = {
    "dask": {
        "/health": b"ok",
        "/json/identity.json": _json(
            {
                "type": "Scheduler",
                "id": "Scheduler-nan",
                "address": "tcp://127.0.0.1:8786",
                "total_threads": NAN,
                "total_memory": INF,
                "workers": {
                    **_worker(
                        "tcp://127.0.0.1:40001",
                        name="nan-worker",
                        nthreads=NAN,
                        memory_limit=INF,
                        last_seen=NAN,
                        status="running",
                        metrics={"cpu": NAN, "memory": -INF, "num_fds": INF, "task_counts": {"memory": NAN}},
                    ),
                    **_worker(
                        "tcp://127.0.0.1:40002",
                        name="inf-worker",
                        nthreads=1,
                        memory_limit=1e308,
                        last_seen=INF,
                        metrics={"memory": 1e308, "event_loop_interval": -INF},
                    ),
                },
            }
        ),
        "/json/counts.json": _json({"erred": NAN, "processing": INF, "waiting": -INF, "clients": 1e400}),
        "/metrics": (
            b"# HELP dask_scheduler_clients Number of clients\n# TYPE dask_scheduler_clients gauge\n"
            b"dask_scheduler_clients NaN\n"
            b'dask_scheduler_workers{state="idle"} +Inf\n'
            b'dask_scheduler_workers{state="saturated"} -Inf\n'
            b'dask_scheduler_tasks{state="erred"} NaN\n'
            b'dask_scheduler_tasks{state="no-worker"} 1e308\n'
            b'dask_scheduler_tasks{state="no-worker"} 1e308\n'
            b"dask_scheduler_tick_duration_maximum_seconds 1e999\n"
        ),
    },
    "ollama": {
        "/api/version": _json({"version": "0.6.2", "build": NAN}),
        "/api/tags": _json(
            {
                "models": [
                    {"name": "llama3.2:latest", "model": "llama3.2", "size": NAN, "details": {"family": "llama"}},
                    {"name": "qwen2.5:latest", "size": INF, "details": {"parameter_size": NAN}},
                ]
            }
        ),
        "/api/ps": _json({"models": [{"name": "llama3.2:latest", "size": INF, "size_vram": NAN}]}),
    },
    "openwebui": {
        "/health": _json({"status": True, "uptime": NAN}),
        "/health/db": _json({"status": True, "latency": -INF}),
        "/api/version": _json({"version": NAN, "deployment_id": INF}),
    },
    "http": {"*": _json({"a": {"b": NAN}, "c": INF, "d": [-INF]})},
}

# Lists where objects go, strings where numbers go, objects where names go.
SHAPE_ANSWERS: dict[str, dict[str, bytes]] = {
    "dask": {
        "/health": _json(["ok"]),
        "/json/identity.json": _json(
            {
                "workers": {
                    "tcp://127.0.0.1:40001": {
                        "name": {"first": ["a"]},
                        "host": [1, 2],
                        "last_seen": "yesterday",
                        "memory_limit": {"bytes": 1},
                        "nthreads": "4",
                        "status": ["running"],
                        "metrics": ["cpu", 1],
                    },
                    "tcp://127.0.0.1:40002": "not a worker",
                    "tcp://127.0.0.1:40003": {"metrics": {"task_counts": ["memory"], "memory": "1 GB"}},
                },
                "total_threads": "many",
            }
        ),
        "/json/counts.json": _json([1, 2, 3]),
        "/metrics": b'dask_scheduler_workers{state="idle"} many\ndask_scheduler_tasks{state=[1]} 1\n',
    },
    "ollama": {
        "/api/version": _json({"version": {"major": [0, 6]}}),
        "/api/tags": _json(
            {"models": [{"name": 5}, {"name": "llama3.2:latest", "size": "big", "details": "none"}, "x", None, []]}
        ),
        "/api/ps": _json({"models": {"name": "llama3.2"}}),
    },
    "openwebui": {
        "/health": _json({"status": "true"}),
        "/health/db": _json([]),
        "/api/version": _json({"version": ["0.6"]}),
    },
    "http": {"*": _json([{"a": "b"}, 1, "two"])},
}


class HostileService:
    def __init__(self, kind: str, case: str) -> None:
        if case not in CASES:
            raise ValueError(f"unknown case {case!r}")
        self.kind, self.case = kind, case
        self.requests: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.answer)
        return app

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if self.case == "endless":
            return await self._endless(request)
        if self.case == "drip":
            return await self._drip(request)
        return web.Response(body=self._body(request.path), content_type="application/json")

    def _body(self, path: str) -> bytes:
        if self.case == "deep":
            return DEEP
        if self.case == "garbage":
            return GARBAGE
        answers = (NAN_ANSWERS if self.case == "nan" else SHAPE_ANSWERS)[self.kind]
        return answers.get(path, answers.get("*", b"{}"))

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(_MAX_CHUNKS):
                await response.write(_CHUNK)
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading, as it should
        return response

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(_MAX_DRIPS):
                await response.write(b"[")
                await asyncio.sleep(0.1)
        except (ConnectionError, RuntimeError):
            pass
        return response
