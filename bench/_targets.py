"""A loopback HTTP server listening on many ports, for the benchmarks (run as its own process)."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def main(ports: list[int]) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for port in ports:
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main([int(p) for p in sys.argv[1:]]))
