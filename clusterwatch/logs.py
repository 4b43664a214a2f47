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
import threading
import time
from typing import Any

from clusterwatch import redact
from clusterwatch.redact import Redactor

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
log = logging.getLogger("clusterwatch")


def component(record: logging.LogRecord) -> str:
    return record.name.removeprefix("clusterwatch.").removeprefix("clusterwatch") or "main"


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class _Redacting(logging.Formatter):
    """Every formatter masks its whole line, traceback and stack included, with the current redactor.

    Masking the finished text rather than `record.msg` is what covers `exc_info` and `stack_info`,
    which logging formats after any filter has run.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact.current().text(self.render(record, redact.current().data(_extra(record))))

    def render(self, record: logging.LogRecord, extra: dict[str, Any]) -> str:
        raise NotImplementedError

    def trailer(self, record: logging.LogRecord) -> str:
        """The traceback and stack, if any, as the lines after the message."""
        parts = []
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        elif record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "".join("\n" + part for part in parts)


class TextFormatter(_Redacting):
    """`LEVEL component: message key=value` (journald adds its own timestamp)."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def render(self, record: logging.LogRecord, extra: dict[str, Any]) -> str:
        fields = " ".join(
            f"{k}={json.dumps(v, default=str) if isinstance(v, str) and ' ' in v else v}" for k, v in extra.items()
        )
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)) + " " if self.timestamps else ""
        text = f"{prefix}{record.levelname} {component(record)}: {record.getMessage()}"
        if fields:
            text += f" {fields}"
        return text + self.trailer(record)


class JSONFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        # Masked field by field, so a secret with a quote or backslash in it is found before JSON escapes it.
        redactor = redact.current()
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "component": component(record),
            "message": redactor.text(record.getMessage()),
            **redactor.data(_extra(record)),
        }
        trailer = self.trailer(record)
        if record.exc_info or record.exc_text:
            data["exception"] = redactor.text(trailer.lstrip("\n"))
        elif trailer:
            data["stack"] = redactor.text(trailer.lstrip("\n"))
        return json.dumps(data, default=lambda value: redactor.text(str(value)))


class ClusterAIFormatter(_Redacting):
    def render(self, record: logging.LogRecord, extra: dict[str, Any]) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        text = f"[{stamp}] [{record.levelname}] [{component(record).upper()}] {record.getMessage()}"
        return text + self.trailer(record)


def _handle_error(handler: logging.Handler, record: logging.LogRecord) -> None:
    """logging's own report of a broken log call prints the call's arguments; say where it is, not what."""
    if logging.raiseExceptions and sys.stderr:
        exc = sys.exc_info()[1]
        sys.stderr.write(
            f"--- logging error in {record.pathname}:{record.lineno}: {type(exc).__name__} (arguments not shown)\n"
        )


class _StreamHandler(logging.StreamHandler):
    handleError = _handle_error


class _FileHandler(logging.handlers.RotatingFileHandler):
    handleError = _handle_error


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    """An exception that ends a thread goes through the log (and so the redactor), not straight to stderr."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    log.error(
        "thread %s died: %s", name, args.exc_type.__name__, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


class _AfterTheError(logging.Filter):
    """Drops psycopg's "error ignored terminating <Pipeline>": an executemany the server refused leaves its
    pipeline aborted, and closing it logs that after the error itself was raised (and said once, by us)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error ignored terminating")


def setup(
    *,
    level: str = "info",
    fmt: str = "text",
    log_dir: str | None = None,
    max_bytes: int = 10 * 2**20,
    backups: int = 5,
    redactor: Redactor | None = None,
) -> None:
    """Log lines to stderr (and Cluster AI's file), every one masked by `redact.current()`.

    `redactor`, if given, is installed as the current one.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level.upper())
    stderr = _StreamHandler(sys.stderr)
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    stderr.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter(timestamps=not under_journald))
    handlers: list[logging.Handler] = [stderr]
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        rotating = _FileHandler(
            os.path.join(log_dir, "clusterwatch.log"), maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        rotating.setFormatter(ClusterAIFormatter())
        handlers.append(rotating)
    if redactor is not None:
        redact.install(redactor)
    for handler in handlers:
        root.addHandler(handler)
    threading.excepthook = _thread_exception
    for noisy in ("asyncssh", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    psycopg = logging.getLogger("psycopg")
    if not any(isinstance(f, _AfterTheError) for f in psycopg.filters):
        psycopg.addFilter(_AfterTheError())
