"""The web server inside `clusterwatch run`: dashboard, /api/v1, /metrics, /healthz.

Secure by default: it listens on 127.0.0.1; anything that changes state needs the bearer
token (and with `web.auth.read: true` or a public `web.status_page`, reading too); a wrong or missing token is a 401,
never a 500. Binding elsewhere without a token is refused when the config is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clusterwatch import redact
from clusterwatch.agent.protocol import AGENT_PATHS
from clusterwatch.web import agents_api, api, dashboard, status_page
from clusterwatch.web.cache import Snapshot
from clusterwatch.web.metrics import counts, render
from clusterwatch.web.queries import READS, History
from clusterwatch.web.view import MONITOR

if TYPE_CHECKING:
    from clusterwatch.web.view import MonitorView as Monitor

log = logging.getLogger("clusterwatch.web")
COOKIE = "clusterwatch_token"
COUNTS_EVERY = 10.0
GROUP_EVERY = 2.0  # at most this long between reads of the group of monitors (lease/4 when shorter)
GROUP_STALE = 10.0  # a read of the group older than this is not shown as its state
OPEN_PATHS = {"/healthz", "/login", "/api/v1/openapi.json"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json", headers=headers
    )


class GroupRead:
    """The group of monitors as last read from the shared store, by one loop in the web's read threads.

    Requests (API, dashboard, /metrics) only look at this copy and never read the store themselves:
    the lease store has few connections, and no number of requests may keep the lease's renewals
    from them. Read every lease/4 (at most GROUP_EVERY), so a change of leader shows within one
    renewal or so; what a person or a machine sees is redacted once, here.
    """

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.every = min(GROUP_EVERY, monitor.config.ha.lease / 4)
        self.value: dict[str, Any] | None = None  # the last good read (MonitorView.group())
        self.read_at: float | None = None  # when (monotonic)
        self.error: str | None = None  # why the last read failed, None when it did not
        self._task: asyncio.Task[None] | None = None

    def age(self) -> float | None:
        return None if self.read_at is None else time.monotonic() - self.read_at

    def fresh(self) -> dict[str, Any] | None:
        """The last read while it is recent enough to tell the group's state; None otherwise."""
        age = self.age()
        return self.value if age is not None and age <= GROUP_STALE else None

    def db_now(self) -> float:
        """The database's clock now (the group's times are on it): its time at the read, plus the read's age."""
        lease = (self.value or {}).get("lease")
        age = self.age()
        if lease is None or lease.get("now") is None or age is None:
            return time.time()
        return float(lease["now"]) + age

    async def refresh(self) -> None:
        try:
            found = await WebServer.read(self.monitor.group)
        except Exception as exc:  # the store away: keep the last read, say why
            self.error = redact.text(f"{type(exc).__name__}: {exc}")[:300]
            log.debug("reading the group of monitors failed: %s", self.error)
            if self.value is not None:  # this monitor's own part is known without the store: kept current
                self.value = {**self.value, "self": redact.current().data(self.monitor.group_self())}
            return
        self.value, self.read_at, self.error = redact.current().data(found), time.monotonic(), None

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.refresh()
                await asyncio.sleep(self.every)

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class WebServer:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        monitor.web = self
        self.token = monitor.config.web.resolve_token()
        redact.current().add(self.token)
        self.history = History(monitor.store_path)
        self.counts: dict[str, list[dict[str, Any]]] = {}
        self.group = GroupRead(monitor)
        self.runner: web.AppRunner | None = None
        # The answers that grow with the number of checks, kept fresh within these ages.
        self.snapshots = {
            "overview": Snapshot(lambda: dashboard.render_overview(monitor), ttl=1.0),
            "status": Snapshot(lambda: api.render_status(monitor), ttl=1.0),
            "metrics": Snapshot(lambda: self.read(render, monitor), ttl=5.0),
        }
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    @staticmethod
    async def read(fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking reads in the web's own threads, never the default executor (DNS lookups use it)."""
        return await asyncio.get_running_loop().run_in_executor(READS, partial(fn, *args))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=64 * 1024)
        app[MONITOR] = self.monitor
        api.routes(app)
        agents_api.routes(app)
        dashboard.routes(app)
        status_page.routes(app)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        return app

    # --- middlewares -------------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json" and request.path.startswith("/api/"):
                return _error(exc.status, exc.reason)
            raise
        except Exception:
            log.exception("web: %s %s failed", request.method, request.path)
            return _error(500, "internal error (logged)")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
        )
        return response

    def _authorized(self, request: web.Request, *, allow_cookie: bool) -> bool:
        if not self.token:
            return False
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not given and allow_cookie:
            given = request.cookies.get(COOKIE, "")
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or request.path in AGENT_PATHS:  # agents: their own tokens (agents_api)
            return await handler(request)
        page = self.monitor.config.web.status_page
        if page is not None and page.public and request.path in status_page.PATHS and request.method in ("GET", "HEAD"):
            return await handler(request)  # the public status page: made to hold nothing secret (status_page.py)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            # Changing state: the header only (a cookie would let other sites act through a browser).
            if not self.token:
                return _error(
                    401,
                    "changing state needs a token, and none is configured: set web.token_file (or web.token: ${ENV})",
                    **{"WWW-Authenticate": "Bearer"},
                )
            if not self._authorized(request, allow_cookie=False):
                return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
            request["actor"] = "api"
            return await handler(request)
        if self.monitor.config.web.read_needs_token and not self._authorized(request, allow_cookie=True):
            if request.path.startswith(("/api/", "/metrics")):
                return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
            raise web.HTTPFound("/login")
        return await handler(request)

    # --- small handlers ------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        if len(self.monitor.entities) > api.SNAPSHOT_AT:
            body = await self.snapshots["metrics"].get()
        else:
            body = render(self.monitor)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(self, request: web.Request) -> web.Response:
        """Healthy only while the monitor does its job: the scheduler makes progress, the store writes."""
        m = self.monitor
        problems = m.problems()
        store = m.store_health()
        body = {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "uptime_s": round(time.time() - m.started_at, 1),
            "checks": len(m.items),
            "entities": len(m.entities),
            "lag_p99_s": round(m.lag_percentiles()[1], 3),
            "store": {k: store.get(k) for k in ("queue_depth", "written", "failures", "dropped", "last_commit_age_s")},
        }
        return web.json_response(body, status=503 if problems else 200)

    async def login_form(self, request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/html",
            text=(
                '<!doctype html><meta name="viewport" content="width=device-width,initial-scale=1">'
                '<title>clusterwatch</title><form method="post" style="font:16px system-ui;margin:3rem auto;'
                'max-width:24rem"><h1>clusterwatch</h1><p>This dashboard needs the token '
                '(<code>web.token_file</code>).</p><input type="password" name="token" autofocus style="width:100%;'
                'padding:.5rem"><button style="margin-top:.5rem;padding:.5rem 1rem">open</button></form>'
            ),
        )

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = str(form.get("token", ""))
        if not self.token or not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.Response(status=401, text="wrong token", content_type="text/plain")
        response = web.HTTPFound("/")
        response.set_cookie(COOKIE, given, httponly=True, samesite="Strict", max_age=30 * 86400)
        return response

    # --- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> bool:
        options = self.monitor.config.web
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        tls = None
        try:
            if options.tls is not None:  # a key that does not match its certificate: said here, with the rest
                tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                tls.load_cert_chain(options.tls.cert, options.tls.key)
            await web.TCPSite(self.runner, options.host, options.port, reuse_address=True, ssl_context=tls).start()
        except OSError as exc:
            log.error(
                "web: cannot listen on %s (%s): dashboard, API and /metrics are off; monitoring goes on",
                options.listen,
                exc.strerror or exc,
            )
            await self.runner.cleanup()
            self.runner = None
            return False
        host = f"[{options.host}]" if ":" in options.host else options.host
        self.url = f"{'https' if tls else 'http'}://{host}:{options.port}/"
        log.info("dashboard at %s", self.url)
        self.history.start()
        self._task = asyncio.create_task(self._refresh_counts())
        if self.monitor.ha_enabled:
            self.group.start()
        if len(self.monitor.items) > 1000:
            for snapshot in self.snapshots.values():
                snapshot.warm()
        return True

    async def _refresh_counts(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.counts = await self.read(counts, self.history)
            await asyncio.sleep(COUNTS_EVERY)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.history.stop()
        await self.group.stop()
        for snapshot in self.snapshots.values():
            await snapshot.stop()
        if self.runner is not None:
            await self.runner.cleanup()


async def start_web(monitor: Monitor) -> WebServer | None:
    if not monitor.config.web.enabled:
        return None
    server = WebServer(monitor)
    return server if await server.start() else None
