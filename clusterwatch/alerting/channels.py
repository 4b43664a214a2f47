"""Channels are Apprise URLs: e-mail, Slack, Discord, Telegram, ntfy, Teams, webhooks and 100 more.

No channel code of our own; this module only builds URLs from Cluster AI's variables and
sends through Apprise, capturing why a send failed (without the secrets in it).
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from clusterwatch.redact import Redactor

_local = threading.local()


class _Capture(logging.Handler):
    """Apprise reports failures only in its log: keep this thread's last lines as the reason."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = getattr(_local, "lines", None)
        if lines is not None and record.levelno >= logging.WARNING:
            lines.append(record.getMessage())


_capture = _Capture()
logging.getLogger("apprise").addHandler(_capture)


def channels_from_env(values: Mapping[str, str]) -> dict[str, str]:
    """Cluster AI's SMTP_* / FROM_EMAIL / ALERT_EMAIL and SLACK_WEBHOOK_URL become channels."""
    channels: dict[str, str] = {}
    server, to = values.get("SMTP_SERVER", "").strip(), values.get("ALERT_EMAIL", "").strip()
    if server and to:
        port = values.get("SMTP_PORT", "587").strip() or "587"
        user, password = values.get("SMTP_USERNAME", ""), values.get("SMTP_PASSWORD", "")
        # The submission ports mean TLS (implicit on 465, STARTTLS on 587); others (25, local relays) are plain.
        scheme, mode = {"465": ("mailtos", "ssl"), "587": ("mailtos", "starttls")}.get(port, ("mailto", ""))
        auth = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@" if user else ""
        query = {"to": to, "from": values.get("FROM_EMAIL", "").strip() or user or f"clusterwatch@{server}"}
        if mode:
            query["mode"] = mode
        channels["email"] = f"{scheme}://{auth}{server}:{port}?{urllib.parse.urlencode(query)}"
    slack = values.get("SLACK_WEBHOOK_URL", "").strip()
    if slack:
        channel = values.get("SLACK_CHANNEL", "").strip()
        channels["slack"] = slack if not channel or "?" in slack else f"{slack}?to={urllib.parse.quote(channel)}"
    return channels


def check_url(url: str) -> str | None:
    """None if Apprise can use the URL, else why not (without repeating the URL: it holds secrets)."""
    import apprise

    lines: list[str] = []
    _local.lines = lines
    try:
        ok = apprise.Apprise().add(url)
    finally:
        _local.lines = None
    if ok:
        return None
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"not a usable Apprise URL ({scheme}://...)" + (f": {Redactor([url]).text(lines[-1])}" if lines else "")


_SEVERITY_TYPE = {"info": "info", "warning": "warning", "critical": "failure", "resolved": "success"}


class Channels:
    def __init__(self, urls: Mapping[str, str], redactor: Redactor | None = None) -> None:
        self.urls = dict(urls)
        self.redactor = redactor or Redactor()
        for url in self.urls.values():
            self.redactor.add(url)
            for part in _secret_parts(url):
                self.redactor.add(part)
        self._apprise: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        if name not in self._apprise:
            import apprise

            instance = apprise.Apprise()
            instance.add(self.urls[name])
            self._apprise[name] = instance
        return self._apprise[name]

    def describe(self, name: str) -> str:
        """The channel's URL with its secrets masked (Apprise's own privacy mode)."""
        try:
            servers = list(self._get(name))
            return servers[0].url(privacy=True) if servers else "?"
        except Exception:
            return self.urls[name].split("://", 1)[0] + "://..."

    def send(self, name: str, title: str, body: str, severity: str) -> tuple[bool, str]:
        """Blocking: run it in a thread. Returns (delivered, why not)."""
        if name not in self.urls:
            return False, f"no channel named {name!r}"
        lines: list[str] = []
        _local.lines = lines
        try:
            import apprise

            ok = self._get(name).notify(
                title=title,
                body=body,
                notify_type=getattr(apprise.NotifyType, _SEVERITY_TYPE.get(severity, "info").upper()),
            )
        except Exception as exc:  # a channel's failure is recorded, never raised
            ok, lines = False, [*lines, f"{type(exc).__name__}: {exc}"]
        finally:
            _local.lines = None
        if ok:
            return True, ""
        reason = lines[-1] if lines else "the channel did not accept the message"
        return False, self.redactor.text(reason)[:300]


def _secret_parts(url: str) -> list[str]:
    """Passwords, tokens and webhook paths inside a channel URL."""
    parts = urllib.parse.urlsplit(url)
    found = [parts.password or ""]
    found += [segment for segment in parts.path.split("/") if len(segment) >= 8]
    found += [
        value
        for key, value in urllib.parse.parse_qsl(parts.query)
        if key.lower() in ("pass", "password", "token", "key", "secret", "apikey")
    ]
    if parts.username and parts.password is None and len(parts.username) >= 16:
        found.append(parts.username)  # tokens written as user (tgram://TOKEN@..., ntfy)
    return [f for f in found if f]
