"""Durations and sizes as people write them in YAML: `500ms`, `30s`, `10m`, `1h`, `1MiB`.

Every value that comes out is finite and bounded: a NaN, an infinity or a number with hundreds of
digits is an error here, not a division by zero or an overflow somewhere in the monitor later.
"""

from __future__ import annotations

import functools
import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}
_HINT = "(use e.g. 500ms, 30s, 10m, 1h)"

MAX_DURATION = 3650 * 86400.0  # ten years: longer is a mistake, and timers and dates overflow
MIN_DURATION = 0.001  # 1ms: anything shorter as an interval would spin the scheduler
MAX_SIZE = 1024**4  # 1 TiB


def parse_duration(value: object) -> float:
    """Seconds from a number (already seconds) or a string such as `1m30s`: zero or more, at most ten years."""
    seconds = _seconds(value)
    if math.isnan(seconds):
        raise ValueError(f"invalid duration {_shown(value)}: not a number {_HINT}")
    if seconds < 0:
        raise ValueError(f"invalid duration {_shown(value)}: must not be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {_shown(value)} is too long (at most {MAX_DURATION / 86400:.0f}d)")
    return seconds


def positive_duration(value: object) -> float:
    """A timeout, interval, window or backoff: zero would divide by zero or spin, so at least 1ms."""
    seconds = parse_duration(value)
    if seconds < MIN_DURATION:
        raise ValueError(f"duration {_shown(value)} must be more than zero (at least 1ms)")
    return seconds


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {_shown(value)} {_HINT}")
    if isinstance(value, int):
        return float(value) if abs(value) <= MAX_DURATION else math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        seconds = _cached_text_seconds(value) if len(value) <= 64 else _text_seconds(value)
        if seconds is not None:
            return seconds
    raise ValueError(f"invalid duration {_shown(value)} {_HINT}")


def _text_seconds(value: str) -> float | None:
    text = value.strip().lower().replace(" ", "")
    if _SECONDS.fullmatch(text):
        return float(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if text and pos == len(text) else None


# A big config writes the same few durations thousands of times.
_cached_text_seconds = functools.lru_cache(maxsize=1024)(_text_seconds)


def parse_size(value: object) -> int:
    """Bytes from a number or a string such as `1MiB`, `500kb`: zero to 1 TiB."""
    size: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match and match.group(2).lower() in _SIZE_UNITS:
            size = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size is None or size < 0:
        raise ValueError(f"invalid size {_shown(value)} (use e.g. 1MiB, 512kB, 1048576)")
    if size > MAX_SIZE:
        raise ValueError(f"size {_shown(value)} is too large (at most 1TiB)")
    return int(size)


def _shown(value: object) -> str:
    """A value for an error message: short, and never a conversion of a huge int to text."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**40:
        return f"(a number of about {int(abs(value).bit_length() * math.log10(2)) + 1} digits)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_duration(seconds: float) -> str:
    """For people: `850ms`, `2.5s`, `40s`, `12m`, `5h`, `3d`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.2g}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
