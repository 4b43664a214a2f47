"""Reading a user's file: bounded in size, UTF-8 (a BOM allowed), Latin-1 where Cluster AI's users save it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

# A 10,000-check config is about 2 MB: eight times that is room enough, and still loads in bounded time.
MAX_FILE_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


class FileProblem(Exception):
    """What is wrong with a file, where; `path` names the field when the problem is about one value."""

    def __init__(self, file: str, line: int, message: str, path: tuple[Any, ...] | None = None) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file, self.line, self.message, self.path = file, line, message, path


def read_text(path: str | Path, *, latin1_fallback: bool = False) -> str:
    """The file's text. Not UTF-8: Latin-1 if allowed (Portuguese `.env` files often are), else an error."""
    file = str(path)
    try:
        # Non-blocking, so a FIFO given as a config file is refused instead of waited on forever.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise FileProblem(file, 0, "cannot read: not a regular file")
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FileProblem(file, 0, f"cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL character in the path
        raise FileProblem(file.replace("\0", "\\0"), 0, f"cannot read: {exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise FileProblem(file, 0, f"file too large (more than {MAX_FILE_BYTES // (1024 * 1024)} MiB)")
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if latin1_fallback:
            return data.decode("latin-1")
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileProblem(file, line, f"not UTF-8 text: {exc.reason} (byte 0x{data[exc.start]:02x})") from None
