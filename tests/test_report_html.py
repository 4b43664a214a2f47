"""`clusterwatch report --html`: one self-contained file with uptime bars and the incident timeline, for
the period `--since`/`--until` say. A real SQLite store with rows set by hand, so each number is known,
and the real CLI."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from clusterwatch import report
from tests.helpers import run_cli
from tests.storecheck import execute, migrated

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source", "track", "embed"}
MINUTE_ROW = (
    "INSERT INTO rollup_minute (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)
HOUR_ROW = (
    "INSERT INTO rollup_hour (entity, ts, count, ok, p50, p95, max, seconds_ok, seconds_known) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)
INCIDENT = (
    "INSERT INTO incidents (id, entity, check_name, opened, closed, status, message, worst, duration) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)
ACTION = (
    "INSERT INTO actions (started, finished, check_name, entity, target, action, reason, attempt, outcome) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)


class Balanced(HTMLParser):
    """Every element that is opened is closed, in order (void elements aside): no tag soup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:  # <rect/> inside SVG
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()


def assert_self_contained(page: str) -> None:
    assert page.lower().startswith("<!doctype html>")
    assert '<html lang="en">' in page and "<title>" in page and '<meta charset="utf-8">' in page
    parser = Balanced()
    parser.feed(page)
    parser.close()
    assert not parser.problems and not parser.stack, (parser.problems, parser.stack)
    for picture in re.findall(r"<svg\b.*?</svg>", page, flags=re.S):
        ET.fromstring(picture)  # each picture is well-formed XML
    lowered = page.lower()
    assert "<script" not in lowered and "<link" not in lowered and "<iframe" not in lowered
    assert "@import" not in lowered and not re.search(r"url\(", lowered)
    assert not re.search(r"""\b(src|href|xlink:href|action|srcset|poster|data)\s*=\s*["']?\s*(https?:|//)""", lowered)
    assert not re.search(r"\b(src|href)\s*=", lowered), "nothing to fetch or follow: the file stands alone"


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path, float]:
    """A store with one service down for ten minutes two hours ago (healed by a credited restart), an
    incident before the period and one after it; and the config that points at it."""
    db = tmp_path / "state.db"
    migrated(db)
    now = time.time() // 60 * 60
    down_at = now - 7200
    rows: list[tuple[str, tuple]] = []
    for minute in range(int(now - 3 * 3600), int(now), 60):
        down = down_at <= minute < down_at + 600
        rows.append((MINUTE_ROW, ("api", minute, 6, 0 if down else 6, 5.0, 8.0, 9.0, 0.0 if down else 60.0, 60.0)))
        rows.append((MINUTE_ROW, ("db", minute, 6, 6, 1.0, 2.0, 3.0, 60.0, 60.0)))
    for hour in range(int((now - 3 * 3600) // 3600 * 3600), int(now), 3600):
        bad = hour <= down_at < hour + 3600
        up = 3000.0 if bad else 3600.0
        rows.append((HOUR_ROW, ("api", hour, 360, 300 if bad else 360, 5.0, 8.0, 9.0, up, 3600.0)))
        rows.append((HOUR_ROW, ("db", hour, 360, 360, 1.0, 2.0, 3.0, 3600.0, 3600.0)))
    rows += [
        (INCIDENT, ("in", "api", "api", down_at, down_at + 600, "critical", "in-window failure", "critical", 600.0)),
        (
            INCIDENT,
            (
                "before",
                "api",
                "api",
                now - 5 * 3600,
                now - 5 * 3600 + 60,
                "critical",
                "before-window failure",
                "critical",
                60.0,
            ),
        ),
        (INCIDENT, ("after", "db", "db", now - 1800, now - 1200, "warning", "after-window failure", "warning", 600.0)),
        (ACTION, (down_at + 60, down_at + 70, "api", "api", "command:x", "command", "down", 1, "succeeded")),
        (ACTION, (now - 5 * 3600 + 10, now - 5 * 3600 + 20, "api", "api", "command:x", "command", "down", 1, "failed")),
    ]
    execute(db, *rows)
    config = tmp_path / "clusterwatch.yaml"
    config.write_text(
        yaml.safe_dump({"store": {"path": str(db)}, "checks": [{"name": "api", "kind": "tcp", "port": 9}]})
    )
    return db, config, now


def test_html_report_is_one_file_with_bars_and_a_timeline_for_the_period(store, tmp_path: Path) -> None:
    _, config, _ = store
    out = tmp_path / "report.html"
    result = run_cli("report", "-c", str(config), "--since", "3h", "--until", "1h", "--html", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert_self_contained(page)

    bars = re.findall(r'<svg\b[^>]*class="uptime-bars".*?</svg>', page, flags=re.S)
    assert len(bars) == 2  # api and db, one row each
    api = next(b for b in bars if "api, " in b)
    assert len(re.findall(r'<g class="slot\b', api)) == report.SLOTS
    # Ten minutes down; a minute counts in the 2.5-minute slot its start falls in: 4 or 5 slots by alignment.
    assert len(re.findall(r'class="slot slot-down"', api)) in (4, 5)
    assert "in-window failure" in api  # the incident under the pointer
    assert "slot-down" not in next(b for b in bars if "db, " in b)

    [timeline] = re.findall(r'<svg\b[^>]*class="timeline".*?</svg>', page, flags=re.S)
    assert len(re.findall(r'<g class="incident ', timeline)) == 1 and "in-window failure" in timeline
    assert len(re.findall(r'<g class="mark mark-credited"', timeline)) == 1
    assert 'class="mark mark-not_credited"' not in timeline  # the failed attempt was before the period
    for outside in ("before-window failure", "after-window failure"):
        assert outside not in page
    # Uptime by time over the period's hours, to two decimals, rounded down.
    assert re.search(r"<td>api</td><td>(9\d\.\d\d)%</td>", page)
    assert "<td>db</td><td>100.00%</td>" in page

    data = json.loads(run_cli("report", "-c", str(config), "--since", "3h", "--until", "1h", "--json").stdout)
    assert [i["id"] for i in data["incidents"]] == ["in"]
    assert [a["outcome"] for a in data["attempts"]] == ["succeeded"]
    assert data["period"]["until"] - data["period"]["since"] == pytest.approx(7200, abs=5)
    slots = data["uptime_slots"]["by_entity"]["api"]
    assert len(slots) == report.SLOTS and sum(known - ok for ok, known in slots) == pytest.approx(600)


def test_dates_and_an_old_period_drawn_from_the_hours(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    migrated(db)
    day = datetime(2025, 3, 10).timestamp()
    noon = day + 12 * 3600
    execute(
        db,
        (HOUR_ROW, ("api", int(noon), 360, 180, 5.0, 8.0, 9.0, 1800.0, 3600.0)),  # half an hour down at noon
        (HOUR_ROW, ("api", int(noon + 3600), 360, 360, 5.0, 8.0, 9.0, 3600.0, 3600.0)),
        (INCIDENT, ("noon", "api", "api", noon + 600, noon + 2400, "critical", "noon failure", "critical", 1800.0)),
    )
    config = tmp_path / "clusterwatch.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(db)}}))
    out = tmp_path / "old.html"
    result = run_cli("report", "-c", str(config), "--since", "2025-03-10", "--until", "2025-03-11", "--html", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert_self_contained(page)
    # The minute rollups of a year ago are gone: the bars come from the hours (one in the noon slot).
    assert "50.00% up" in page and "noon failure" in page
    assert "<td>api</td><td>75.00%</td>" in page
    assert "2025-03-10 00:00 – 2025-03-11 00:00" in page


def test_since_and_until_are_checked() -> None:
    now = time.time()
    assert report.parse_when("7d", now) == pytest.approx(now - 7 * 86400)
    assert report.parse_when("2026-03-01", now) == datetime(2026, 3, 1).timestamp()
    assert report.parse_when("2026-03-01 14:30", now) == datetime(2026, 3, 1, 14, 30).timestamp()
    for bad in ("yesterday", "2026-13-01", "-3d", ""):
        with pytest.raises(ValueError):
            report.parse_when(bad, now)


def test_until_before_since_is_refused(store) -> None:
    _, config, _ = store
    result = run_cli("report", "-c", str(config), "--since", "1h", "--until", "2h")
    assert result.returncode == 3 and "must be before --until" in result.stderr
    result = run_cli("report", "-c", str(config), "--until", "last week")
    assert result.returncode == 3 and "--until" in result.stderr


def test_down_time_counts_what_fell_inside_the_period_open_incidents_too(tmp_path: Path) -> None:
    """An incident still open counts until the end of the period, one opened before it from its start on; MTTR
    stays over closed incidents."""
    db = tmp_path / "state.db"
    migrated(db)
    now = time.time()
    execute(
        db,
        (INCIDENT, ("open", "api", "api", now - 1800, None, "critical", "still down", "critical", None)),
        (INCIDENT, ("across", "db", "db", now - 7200, now - 3000, "critical", "began before", "critical", 4200.0)),
        (INCIDENT, ("inside", "db", "db", now - 2000, now - 1900, "warning", "short", "warning", 100.0)),
    )
    config = tmp_path / "clusterwatch.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(db)}}))
    result = run_cli("report", "-c", str(config), "--since", "1h", "--json")
    assert result.returncode == 0, result.stderr
    services = {s["entity"]: s for s in json.loads(result.stdout)["services"]}
    assert services["api"]["downtime_s"] == pytest.approx(1800, abs=30)
    assert services["api"]["open"] == 1 and services["api"]["mttr_s"] is None
    assert services["db"]["downtime_s"] == pytest.approx(600 + 100, abs=30)
    assert services["db"]["mttr_s"] == pytest.approx((4200 + 100) / 2)
