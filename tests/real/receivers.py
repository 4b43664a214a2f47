"""Real receivers for alerts: an SMTP server with login (aiosmtpd), and a webhook server (aiohttp)."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.helpers import ServerThread, free_port


@dataclass
class Mail:
    sender: str
    to: list[str]
    subject: str
    body: str
    user: str | None
    at: float


class SMTPReceiver:
    """Accepts mail only after AUTH with the right user and password, as a real relay would."""

    def __init__(self, user: str = "alerts", password: str = "s3cret-smtp-pass") -> None:
        self.user, self.password = user, password
        self.mails: list[Mail] = []
        self.port = free_port()
        self.logins: list[str] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                body = message.get_body(preferencelist=("plain", "html"))
                receiver.mails.append(
                    Mail(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        str(message["subject"]),
                        body.get_content() if body else "",
                        getattr(session, "login_data", None) and receiver.user,
                        time.time(),
                    )
                )
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == self.user
                and auth_data.password.decode() == self.password
            )
            self.logins.append(f"{mechanism}:{'ok' if ok else 'refused'}")
            return AuthResult(success=ok, handled=False)

        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticator,
            auth_require_tls=False,
            auth_required=True,
        )

    def start(self) -> SMTPReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def url(self, to: str = "oncall@example.org") -> str:
        return f"mailto://{self.user}:{self.password}@127.0.0.1:{self.port}?from=clusterwatch@example.org&to={to}"


@dataclass
class Hit:
    path: str
    body: Any
    at: float


@dataclass
class WebhookReceiver:
    """Records every POST; can be told to fail (HTTP 500) until a given time."""

    hits: list[Hit] = field(default_factory=list)
    failing_until: float = 0.0
    refused: int = 0
    pings: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> web.Application:
        async def post(request: web.Request) -> web.Response:
            raw = await request.read()
            if time.time() < self.failing_until:
                self.refused += 1
                return web.Response(status=500, text="receiver down")
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            with self.lock:
                self.hits.append(Hit(request.path, body, time.time()))
            return web.Response(text="ok")

        async def ping(request: web.Request) -> web.Response:
            self.pings.append(time.time())
            return web.Response(text="OK")

        app = web.Application()
        app.router.add_get("/ping/{uuid}", ping)
        app.router.add_post("/{tail:.*}", post)
        return app

    def serve(self) -> ServerThread:
        return ServerThread(self.app()).start()

    def titles(self, path: str | None = None) -> list[str]:
        out = []
        for hit in self.hits:
            if path and hit.path != path:
                continue
            body = hit.body
            if isinstance(body, dict):
                out.append(str(body.get("title") or body.get("text") or body))
        return out
