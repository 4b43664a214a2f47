"""An Open WebUI double that answers as 0.12.4 does (backend/open_webui/main.py), readiness included.

- `GET /health` -> `{"status": true}` while the process serves at all;
- `GET /ready` -> `{"status": true}`, or 503 with FastAPI's `{"detail": reason}`: "Startup not complete"
  (its lifespan has not finished), "Database not ready" (`SELECT 1` on a fresh connection failed),
  "Redis not ready";
- `GET /health/db` -> `{"status": true}`, or, when its ping raises, Starlette's bare 500
  (`text/plain`, "Internal Server Error");
- `GET /api/version` -> `{"version": ..., "deployment_id": ...}`.

`old = True` is a version before `/ready` and `/health/db`: its web app (mounted at `/`) answers any
unknown path with its index page, 200 and HTML.
"""

from __future__ import annotations

from aiohttp import web

INDEX = "<!doctype html><html><head><title>Open WebUI</title></head><body><div id=app></div></body></html>"


class OpenWebUIReadyDouble:
    def __init__(self, version: str = "0.12.4") -> None:
        self.version = version
        self.startup_complete = True
        self.database = True
        self.redis = True  # only asked when it has a Redis (REDIS_URL)
        self.old = False
        self.requests: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/api/version", self.api_version)
        app.router.add_get("/{tail:.*}", self.rest)
        return app

    async def health(self, request: web.Request) -> web.StreamResponse:
        self.requests.append("/health")
        return web.json_response({"status": True})

    async def api_version(self, request: web.Request) -> web.StreamResponse:
        self.requests.append("/api/version")
        return web.json_response({"version": self.version, "deployment_id": ""})

    async def rest(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if self.old or request.path not in ("/ready", "/health/db"):
            return web.Response(text=INDEX, content_type="text/html")
        if request.path == "/health/db":
            if not self.database:
                return web.Response(status=500, text="Internal Server Error", content_type="text/plain")
            return web.json_response({"status": True})
        for ok, reason in (
            (self.startup_complete, "Startup not complete"),
            (self.database, "Database not ready"),
            (self.redis, "Redis not ready"),
        ):
            if not ok:
                return web.json_response({"detail": reason}, status=503)
        return web.json_response({"status": True})
