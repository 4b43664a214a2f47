"""Keeps secrets out of everything a person or a machine reads: logs, `config show`, errors, API, alerts.

There is one *current* redactor for the whole process (`current()`); logs, tracebacks, Apprise's
own log lines, error messages and outputs all ask for it when they write, so a config reload that
`install()`s a new one changes what every one of them masks at once. A secret the previous one
knew stays masked: a rotated password is still somebody's password, and work started under the
old config may still print it.
"""

from __future__ import annotations

import functools
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

MASK = "***"
_SENSITIVE_KEY = re.compile(r"(password|passphrase|passwd|token|secret|authorization|api[_-]?key|webhook|cookie)", re.I)

# `scheme://user:password@host`: everything between the first ':' after the user and the last '@'.
_URL_USERINFO = re.compile(r"(?P<head>://[^:/@\s]*):(?P<pw>(?!\*+@)[^\s/?#]+)@")
# `user:password@host` with no scheme (xmlrpc's ProtocolError repr): only before something that is a host.
_BARE_USERINFO = re.compile(
    r"(?<![\w.+%~:-])(?!(?:mailto|mailtos|sip|sips|xmpp|tel):)(?P<user>[\w.+%~-]+):(?P<pw>(?!\*+@)[^\s/?#@]+(?:@[^\s/?#@]+)*)@"
    r"(?=(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d+)?(?:[/\s>'\"),;]|$))"
)
_QUERY_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[^=&;?#\s]+)=)(?P<value>[^&;#\s'\"<>]+)")
_BEARER = re.compile(r"(?P<head>\bBearer(?:\s+|%20|\+))[A-Za-z0-9._~+/=-]{8,}")

# Query parameters are named tersely (`key`, `sig`): a name is a secret's when its last word is one of these.
_SECRET_WORDS = frozenset(
    {
        "token",
        "key",
        "apikey",
        "secret",
        "password",
        "pass",
        "passwd",
        "pwd",
        "auth",
        "signature",
        "sig",
        "credential",
        "credentials",
        "session",
        "sessionid",
        "authorization",
        "cookie",
    }
)


@functools.lru_cache(maxsize=4096)
def is_secret_parameter(name: str) -> bool:
    """`access_token`, `apiKey`, `X-Amz-Signature`, `key` are; `services`, `monkey`, `keys` are not."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", urllib.parse.unquote(name))
    words = [w for w in re.split(r"[_\-.+\[\]\s]+", spaced.lower()) if w]
    return bool(words) and words[-1] in _SECRET_WORDS


def _mask_query(match: re.Match[str]) -> str:
    return f"{match['head']}{MASK}" if is_secret_parameter(match["name"]) else match[0]


class Redactor:
    """Masks known secret values wherever they appear, plus passwords in URLs and secret query parameters."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        # Very short values would mask ordinary words ("1", "on"); they are not real secrets.
        if not secret or len(secret) < 4:
            return
        # A password with `@` or `/` in it is written percent-encoded inside a URL.
        variants = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret, safe="")}
        with self._lock:
            if variants <= self._secrets:
                return
            self._secrets |= variants
            self._pattern = None

    def extend(self, other: Redactor) -> None:
        for secret in other.secrets():
            self.add(secret)

    def secrets(self) -> list[str]:
        with self._lock:
            return list(self._secrets)

    def _known(self) -> re.Pattern[str] | None:
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                if self._secrets:
                    # Longest first, so a secret that contains another is masked whole.
                    alternatives = sorted(self._secrets, key=len, reverse=True)
                    pattern = self._pattern = re.compile("|".join(map(re.escape, alternatives)))
        return pattern

    def text(self, value: str) -> str:
        known = self._known()
        if known is not None:
            value = known.sub(MASK, value)
        # The cheap `in` tests first: most log lines have no '@', '=' or bearer token at all.
        if "@" in value:
            value = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", value)
            value = _BARE_USERINFO.sub(lambda m: f"{m['user']}:{MASK}@", value)
        if "=" in value:
            value = _QUERY_PARAM.sub(_mask_query, value)
        if "Bearer" in value:
            value = _BEARER.sub(lambda m: f"{m['head']}{MASK}", value)
        return value

    def data(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self.data(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(v, key) for v in value]
        if type(value) is tuple:
            return tuple(self.data(v, key) for v in value)
        if isinstance(value, str):
            if value and _SENSITIVE_KEY.search(key):
                return MASK
            return self.text(value)
        return value

    @staticmethod
    def is_sensitive_name(name: str) -> bool:
        return bool(_SENSITIVE_KEY.search(name))


_current = Redactor()
_install_lock = threading.Lock()


def current() -> Redactor:
    """The redactor everything masks with now."""
    return _current


def install(redactor: Redactor) -> Redactor:
    """Make `redactor` the current one (at start, and on each reload); it learns the previous one's secrets."""
    global _current
    with _install_lock:
        if redactor is not _current:
            redactor.extend(_current)
            _current = redactor
    return redactor


def text(value: str) -> str:
    """`current().text(value)`."""
    return _current.text(value)
