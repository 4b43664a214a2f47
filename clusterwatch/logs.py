"""Log lines: structured on stderr (journald-friendly, or JSON), and Cluster AI's own format in files.

Cluster AI's web backend parses `[YYYY-mm-dd HH:MM:SS] [LEVEL] [COMPONENT] message` from
`logs/*.log`; writing that format keeps its log viewer working.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from typing import Any

from clusterwatch.redact import Redactor

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def component(record: logging.LogRecord) -> str:
    return record.name.removeprefix("clusterwatch.").removeprefix("clusterwatch") or "main"


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """The last line of defence: no secret leaves through a log line."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(record.getMessage())
        record.args = ()
        return True


class TextFormatter(logging.Formatter):
    """`LEVEL component: message key=value` (journald adds its own timestamp)."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{k}={json.dumps(v, default=str) if isinstance(v, str) and ' ' in v else v}"
            for k, v in _extra(record).items()
        )
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)) + " " if self.timestamps else ""
        text = f"{prefix}{record.levelname} {component(record)}: {record.getMessage()}"
        if fields:
            text += f" {fields}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "component": component(record),
            "message": record.getMessage(),
            **_extra(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class ClusterAIFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        text = f"[{stamp}] [{record.levelname}] [{component(record).upper()}] {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(
    *,
    level: str = "info",
    fmt: str = "text",
    log_dir: str | None = None,
    max_bytes: int = 10 * 2**20,
    backups: int = 5,
    redactor: Redactor | None = None,
) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level.upper())
    stderr = logging.StreamHandler(sys.stderr)
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    stderr.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter(timestamps=not under_journald))
    handlers: list[logging.Handler] = [stderr]
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(
            os.path.join(log_dir, "clusterwatch.log"), maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        rotating.setFormatter(ClusterAIFormatter())
        handlers.append(rotating)
    for handler in handlers:
        if redactor is not None:
            handler.addFilter(RedactingFilter(redactor))
        root.addHandler(handler)
    for noisy in ("asyncssh", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
