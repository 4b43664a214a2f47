"""An Ollama double answering the real shapes (server/routes.go, api/types.go).

Ollama has no server binary for these machines; everything else in the tests is real.
`mode` makes the whole server misbehave the ways a real one does: overloaded (503), broken (500),
garbage, a huge body, an answer that never comes. `generate_mode` breaks only /api/generate while
/, /api/version, /api/tags and /api/ps still answer (ollama/ollama #1378: "Ollama is running" while a
generation hangs; #3552, #10119). `load(gpu_share=...)` puts the model in /api/ps partly on the GPU
(#3930, #8594), and `tokens_per_second` sets how fast it generates, so a test can make it fall.

A generation takes the time its answer claims (load + prompt + eval): Ollama's durations always fit
inside the client's wall clock, and the probe relies on that.
"""

from __future__ import annotations

import asyncio
import json
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
KV_CACHE = 448 * 1024 * 1024  # /api/ps counts the context's cache in `size` too: more than the file


class OllamaDouble:
    def __init__(self) -> None:
        self.mode = "ok"
        # ok, hang, 500 (the runner died), not_done, drop (connection closed), or 503/garbage/huge as `mode`
        self.generate_mode = "ok"
        self.models: list[dict[str, Any]] = [dict(MODEL)]
        self.loaded: list[dict[str, Any]] = []
        self.generate_delay = 0.0
        self.tokens_per_second = 100.0
        self.load_seconds = 0.02
        self.prompt_seconds = 0.02
        self.generate_override: dict[str, Any] = {}  # fields replaced in the final answer (garbage, NaN, huge)
        self.generate_raw: bytes | None = None  # or the whole body, as sent
        self.requests: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/", self.root)
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/ps", self.ps)
        app.router.add_post("/api/generate", self.generate)
        return app

    def load(self, name: str = "llama3.2:latest", gpu_share: float = 1.0) -> dict[str, Any]:
        """The model in memory as /api/ps lists it, `gpu_share` of it in VRAM (the rest on CPU)."""
        model = next(m for m in self.models if m["name"] == name)
        size = int(model["size"]) + KV_CACHE
        entry = {
            "name": model["name"],
            "model": model["model"],
            "size": size,
            "digest": model["digest"],
            "details": model["details"],
            "expires_at": "2026-11-27T10:05:00Z",
            "size_vram": int(size * gpu_share),
            "context_length": 4096,
        }
        self.loaded = [m for m in self.loaded if m["name"] != name] + [entry]
        return entry

    async def _misbehave(self, mode: str | None = None) -> web.StreamResponse | None:
        mode = mode or self.mode
        if mode == "503":
            return web.Response(status=503, text="server busy, please try again. maximum pending requests exceeded")
        if mode == "500":
            return web.json_response({"error": "internal"}, status=500)
        if mode == "garbage":
            return web.Response(text="<html>{{not json", content_type="application/json")
        if mode == "huge":
            return web.Response(body=b"x" * (50 * 1024 * 1024), content_type="application/json")
        if mode == "hang":
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
        options = body.get("options") or {}
        self.requests.append(f"generate:{body.get('model')}:{options.get('num_predict')}")
        bad = await self._misbehave()
        if bad:
            return bad
        if self.generate_mode in ("503", "garbage", "huge"):
            return await self._misbehave(self.generate_mode)  # type: ignore[return-value]
        if self.generate_mode == "hang":  # the runner is wedged: the request is taken, nothing comes back
            await asyncio.sleep(3600)
        if self.generate_mode == "500":  # what Ollama says when its runner died under it
            return web.json_response({"error": "llama runner process has terminated: signal: killed"}, status=500)
        if self.generate_mode == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if not any(m["name"] in (body.get("model"), f"{body.get('model')}:latest") for m in self.models):
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        tokens = max(1, min(4096, int(options.get("num_predict") or 1)))
        eval_s = tokens / self.tokens_per_second
        total_s = self.load_seconds + self.prompt_seconds + eval_s
        await asyncio.sleep(total_s + self.generate_delay)
        answer = {
            "model": body["model"],
            "created_at": "2026-11-27T10:00:00Z",
            "response": " ".join(str(i) for i in range(1, tokens + 1)),
            "done": self.generate_mode != "not_done",
            "done_reason": "length",
            "total_duration": int(total_s * 1e9),
            "load_duration": int(self.load_seconds * 1e9),
            "prompt_eval_count": 26,
            "prompt_eval_duration": int(self.prompt_seconds * 1e9),
            "eval_count": tokens,
            "eval_duration": int(eval_s * 1e9),
            **self.generate_override,
        }
        if self.generate_raw is not None:
            return web.Response(body=self.generate_raw, content_type="application/json")
        return web.Response(text=json.dumps(answer), content_type="application/json")
