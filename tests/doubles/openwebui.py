"""An Open WebUI double for the fast suite (the real one is the opt-in slow test)."""

from __future__ import annotations

import asyncio

from aiohttp import web


class OpenWebUIDouble:
    def __init__(self) -> None:
        self.mode = "ok"
        self.db_ok = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/health/db", self.health_db)
        app.router.add_get("/api/version", self.version)
        return app

    async def health(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "false":
            return web.json_response({"status": False})
        if self.mode == "500":
            return web.Response(status=500, text="Internal Server Error")
        if self.mode == "garbage":
            return web.Response(text="\x00\x01garbage", content_type="application/json")
        if self.mode == "huge":
            return web.Response(body=b"{" * (50 * 1024 * 1024), content_type="application/json")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return web.json_response({"status": True})

    async def health_db(self, request: web.Request) -> web.StreamResponse:
        if not self.db_ok:
            return web.json_response({"detail": "database error"}, status=500)
        return web.json_response({"status": True})

    async def version(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": "0.6.5", "deployment_id": "test"})
