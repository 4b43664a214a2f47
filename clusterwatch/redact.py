"""Keeps secrets out of everything a person or a machine reads: logs, `config show`, errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
_SENSITIVE_KEY = re.compile(r"(password|passphrase|passwd|token|secret|authorization|api[_-]?key|webhook|cookie)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]+)@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|pass|token|key|secret|apikey|api_key)=)[^&\s]+", re.I)


class Redactor:
    """Masks known secret values wherever they appear, plus passwords inside URLs."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        # Very short values would mask ordinary words ("1", "on"); they are not real secrets.
        if secret and len(secret) >= 4:
            self._secrets.add(secret)

    def text(self, value: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            value = value.replace(secret, MASK)
        value = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)
        return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", value)

    def data(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self.data(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(v, key) for v in value]
        if isinstance(value, str):
            if value and _SENSITIVE_KEY.search(key):
                return MASK
            return self.text(value)
        return value

    @staticmethod
    def is_sensitive_name(name: str) -> bool:
        return bool(_SENSITIVE_KEY.search(name))
