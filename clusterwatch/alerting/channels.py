"""Channels are Apprise URLs: e-mail, Slack, Discord, Telegram, ntfy, Teams, webhooks and 100 more.

No channel code of our own; this module only builds URLs from Cluster AI's variables and
sends through Apprise, capturing why a send failed (without the secrets in it).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

from clusterwatch import redact
from clusterwatch.redact import MASK, Redactor

# Context variables, not thread-locals: Apprise sends from its own pool threads, with a copy of the caller's context.
_scope_urls: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("apprise_scope_urls", default=())
_scope_lines: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("apprise_scope_lines", default=None)
_DELIMITERS = re.compile(r"[/:@?&=#,+\s]+")


class _ApprisePrivacy(logging.Filter):
    """Apprise logs a URL it rejects in full: mask the URL in hand, and every known secret, in its own lines.

    Apprise reports why a send failed only in its log, so this thread's last lines are kept as the reason.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for url in _scope_urls.get():
            message = _mask_tokens(message, url)
        record.msg, record.args = redact.current().text(message), ()
        lines = _scope_lines.get()
        if lines is not None and record.levelno >= logging.WARNING:
            lines.append(record.msg)
        return True


_privacy = _ApprisePrivacy()
logging.getLogger("apprise").addFilter(_privacy)


@contextlib.contextmanager
def _apprise_scope(url: str | None) -> Iterator[list[str]]:
    """While Apprise works in this thread: its lines are kept, and while it parses `url`, every part of it is masked.

    Parsing is where Apprise prints a URL it could not understand (so cannot mask); once parsed, its
    secrets are known to the current redactor and a send's lines keep their hosts and ports readable.
    """
    lines: list[str] = []
    urls_token, lines_token = _scope_urls.set((url,) if url else ()), _scope_lines.set(lines)
    try:
        yield lines
    finally:
        _scope_urls.reset(urls_token)
        _scope_lines.reset(lines_token)


def _tokens(url: str) -> set[str]:
    """The parts of a URL between its delimiters, as written and decoded (the scheme left out)."""
    rest = url.split("://", 1)[-1]
    found = set()
    for token in _DELIMITERS.split(rest):
        for form in (token, urllib.parse.unquote(token)):
            if len(form) >= 3:
                found.add(form)
    return found


def _mask_tokens(message: str, url: str) -> str:
    message = message.replace(url, url.split("://", 1)[0] + "://" + MASK if "://" in url else MASK)
    for token in sorted(_tokens(url), key=len, reverse=True):
        message = re.sub(rf"(?<![\w.-]){re.escape(token)}(?![\w-])", MASK, message)
    return message


def privacy_url(url: str) -> str:
    """The URL as Apprise shows it with `privacy=True` (passwords, tokens and webhook paths masked)."""
    import apprise

    with _apprise_scope(url):
        try:
            server = apprise.Apprise.instantiate(url)
        except Exception:  # a URL Apprise cannot read is shown by its scheme only
            server = None
    if server is None:
        return url.split("://", 1)[0] + "://" + MASK if "://" in url else MASK
    return str(server.url(privacy=True))


def privacy_webhook(url: str) -> str:
    """A plain webhook or ping URL (the heartbeat's) with its password, token-like path parts and keys masked."""
    for part in sorted(_secret_parts(url), key=len, reverse=True):
        url = url.replace(part, MASK)
    return redact.text(url)


def remember_secrets(url: str, redactor: Redactor | None = None) -> None:
    """Teach the current redactor (and `redactor`) a channel URL's secrets, so no log or error shows them."""
    targets = [redact.current()] + ([redactor] if redactor is not None and redactor is not redact.current() else [])
    parts = [url, *_secret_parts(url), *_apprise_secret_parts(url)]
    for target in targets:
        for part in parts:
            target.add(part)


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

    with _apprise_scope(url) as lines:
        ok = apprise.Apprise().add(url)
    if ok:
        remember_secrets(url)
        return None
    for part in _secret_parts(url):
        redact.current().add(part)
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"not a usable Apprise URL ({scheme}://...)" + (f": {lines[-1]}" if lines else "")


_SEVERITY_TYPE = {"info": "info", "warning": "warning", "critical": "failure", "resolved": "success"}


class Channels:
    def __init__(self, urls: Mapping[str, str], redactor: Redactor | None = None) -> None:
        self.urls = dict(urls)
        for url in self.urls.values():
            remember_secrets(url, redactor)
        self._apprise: dict[str, Any] = {}

    @property
    def redactor(self) -> Redactor:
        return redact.current()

    def _get(self, name: str) -> Any:
        if name not in self._apprise:
            import apprise

            instance = apprise.Apprise()
            with _apprise_scope(self.urls[name]):
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
        self._get(name)
        with _apprise_scope(None) as lines:
            try:
                import apprise

                ok = self._get(name).notify(
                    title=title,
                    body=body,
                    notify_type=getattr(apprise.NotifyType, _SEVERITY_TYPE.get(severity, "info").upper()),
                )
            except Exception as exc:  # a channel's failure is recorded, never raised
                ok = False
                lines.append(f"{type(exc).__name__}: {exc}")
        if ok:
            return True, ""
        reason = lines[-1] if lines else "the channel did not accept the message"
        return False, redact.current().text(reason)[:300]


def _apprise_secret_parts(url: str) -> list[str]:
    """What Apprise's privacy mode hides in this URL: the parts of `url()` that `url(privacy=True)` lacks."""
    import apprise

    try:
        with _apprise_scope(url):
            server = apprise.Apprise.instantiate(url)
        if server is None:
            return []
        return sorted(_tokens(str(server.url())) - _tokens(str(server.url(privacy=True))))
    except Exception:
        return []


def _secret_parts(url: str) -> list[str]:
    """Passwords, tokens and webhook paths inside a channel URL, even one Apprise cannot read.

    A path segment is a token only if it looks like one (letters and digits, or long and unbroken):
    `services` in `https://hooks.slack.com/services/...` is a word, not a secret.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:  # a port that is not a number: the userinfo is still there
        return []
    found = [password or ""]
    found += [segment for segment in parts.path.split("/") if _looks_like_token(segment)]
    found += [value for key, value in urllib.parse.parse_qsl(parts.query) if redact.is_secret_parameter(key)]
    if username and password is None and len(username) >= 16:
        found.append(username)  # tokens written as user (tgram://TOKEN@..., ntfy)
    return [f for f in found if f]


def _looks_like_token(segment: str) -> bool:
    if len(segment) < 8:
        return False
    mixed = any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment)
    return mixed or (len(segment) >= 20 and re.fullmatch(r"[A-Za-z0-9_-]+", segment) is not None)
