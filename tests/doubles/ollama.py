"""An Ollama double answering the real shapes (server/routes.go, api/types.go).

Ollama has no server binary for these machines; everything else in the tests is real.
`mode` makes it misbehave the ways a real one does: overloaded (503), broken (500),
garbage, a huge body, an answer that never comes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

MODEL = {
    "name": "llama3.2:latest",
    "model": "llama3.2:latest",
    "modified_at": "2026-10-01T10:00:00Z",
    "size": 2019393189,
    "digest": "a80c4f17acd5",
    "details": {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    },
}


class OllamaDouble:
    def __init__(self) -> None:
        self.mode = "ok"
        self.models: list[dict[str, Any]] = [dict(MODEL)]
        self.loaded: list[dict[str, Any]] = []
        self.generate_delay = 0.0
        self.requests: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/", self.root)
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/ps", self.ps)
        app.router.add_post("/api/generate", self.generate)
        return app

    async def _misbehave(self) -> web.StreamResponse | None:
        if self.mode == "503":
            return web.Response(status=503, text="server busy, please try again. maximum pending requests exceeded")
        if self.mode == "500":
            return web.json_response({"error": "internal"}, status=500)
        if self.mode == "garbage":
            return web.Response(text="<html>{{not json", content_type="application/json")
        if self.mode == "huge":
            return web.Response(body=b"x" * (50 * 1024 * 1024), content_type="application/json")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return None

    async def root(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.StreamResponse:
        self.requests.append("version")
        return await self._misbehave() or web.json_response({"version": "0.6.2"})

    async def tags(self, request: web.Request) -> web.StreamResponse:
        return await self._misbehave() or web.json_response({"models": self.models})

    async def ps(self, request: web.Request) -> web.StreamResponse:
        return await self._misbehave() or web.json_response({"models": self.loaded})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(f"generate:{body.get('model')}:{body.get('options', {}).get('num_predict')}")
        bad = await self._misbehave()
        if bad:
            return bad
        if not any(m["name"] in (body.get("model"), f"{body.get('model')}:latest") for m in self.models):
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        await asyncio.sleep(self.generate_delay)
        return web.json_response(
            {
                "model": body["model"],
                "created_at": "2026-11-27T10:00:00Z",
                "response": "ok",
                "done": True,
                "total_duration": 120000000,
                "load_duration": 20000000,
                "eval_count": 1,
            }
        )
