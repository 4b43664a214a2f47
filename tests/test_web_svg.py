"""The SVG pictures: well-formed XML whatever the numbers and labels, labelled for people who cannot see them,
and readable without colour."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from clusterwatch.web.svg import (
    Mark,
    Slot,
    Span,
    format_percent,
    gauge,
    latency_chart,
    timeline,
    uptime_bars,
    uptime_share,
)

NS = "{http://www.w3.org/2000/svg}"
HOSTILE = '</title><script>alert("x")</script>&amp; <b>\x00\x1b\x07 ]]> \'"'
NOW = 1_750_000_000.0


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    assert root.get("role") == "img"
    assert root.get("aria-label")
    assert root.find(f"{NS}title") is not None and root.find(f"{NS}title").text == root.get("aria-label")
    return root


def no_script(root: ET.Element) -> None:
    assert not [e for e in root.iter() if e.tag.endswith("script") or e.tag.endswith("b")]


def slots_24h(downs: list[float | None]) -> list[Slot]:
    start = NOW - 86400
    step = 86400 / len(downs)
    return [Slot(start + i * step, start + (i + 1) * step, d) for i, d in enumerate(downs)]


def test_uptime_bars_one_bar_per_slot_titles_and_total_by_time():
    downs: list[float | None] = [0.0] * 48
    downs[10] = 0.5  # 15 min down of a 30 min slot
    downs[11] = None
    root = parse(uptime_bars(slots_24h(downs), label="api"))
    slots = root.findall(f"{NS}g")
    assert len(slots) == 48
    tips = [g.find(f"{NS}title").text for g in slots]
    assert "50.00% up (15 min down)" in tips[10]
    assert "no data" in tips[11]
    assert "100.00% up" in tips[0]
    # 47 known slots, one half down: 46.5 / 47 of the known time up
    assert f"api: {format_percent(46.5 / 47)} up" in root.get("aria-label")
    assert "1 of 48 slots with down time" in root.get("aria-label")
    # down time is hatched (a shape), not only a colour
    assert slots[10].find(f"{NS}path") is not None
    assert slots[0].find(f"{NS}path") is None
    assert "slot-down" in slots[10].get("class") and "slot-none" in slots[11].get("class")


def test_uptime_bars_incident_under_the_pointer_and_hostile_text_escaped():
    start = NOW - 1800
    svg = uptime_bars([Slot(start, NOW, 1.0, incident=HOSTILE)], label=HOSTILE)
    root = parse(svg)
    no_script(root)
    tip = root.find(f"{NS}g").find(f"{NS}title").text
    assert '<script>alert("x")</script>' in tip  # text, escaped on the wire
    assert "<script>" not in svg and "\x00" not in svg and "\x1b" not in svg


def test_uptime_percent_two_decimals_rounded_down():
    assert format_percent(1.0) == "100.00%"
    assert format_percent(0.99999) == "99.99%"  # down time never shows as 100.00%
    assert format_percent(0.5) == "50.00%"
    assert format_percent(None) == "no data"
    assert format_percent(float("nan")) == "no data"
    assert uptime_share([]) is None
    # weighted by known time: a slot known for 60 s counts less than one known for 1800 s
    s = [Slot(0, 1800, 0.0, known=1800), Slot(1800, 3600, 1.0, known=60)]
    assert uptime_share(s) == pytest.approx(1800 / 1860)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), -1.0, 7.0])
def test_uptime_bars_bad_numbers(bad):
    parse(uptime_bars(slots_24h([bad, 0.0]), label="x"))
    parse(uptime_bars([], label="nothing"))


def test_timeline_bars_marks_and_open_incident():
    start, end = NOW - 86400, NOW
    incidents = [
        Span(NOW - 7200, NOW - 3600, "db down", key="db"),
        Span(NOW - 5000, None, HOSTILE, severity="warning", key="web"),
        Span(NOW - 200000, NOW - 190000, "long gone"),  # outside: not drawn
    ]
    marks = [
        Mark(NOW - 7000, "started", "restart db #1", key="db"),
        Mark(NOW - 3700, "credited", "restart db #1", key="db"),
        Mark(NOW - 4000, "not_credited", "restart web #1", key="web"),
        Mark(NOW - 100, "started", "reboot node", key=None),
    ]
    svg = timeline(incidents, marks, start, end)
    root = parse(svg)
    no_script(root)
    groups = [g for g in root.iter(f"{NS}g") if g.get("class")]
    incs = [g for g in groups if "incident" in g.get("class")]
    assert len(incs) == 2
    assert any("open" in g.get("class") for g in incs)
    open_tip = next(g for g in incs if "open" in g.get("class")).find(f"{NS}title").text
    assert "still open" in open_tip and '<script>alert("x")</script>' in open_tip
    kinds = [g.get("class") for g in groups if g.get("class", "").startswith("mark ")]
    assert sorted(kinds) == ["mark mark-credited", "mark mark-not_credited", "mark mark-started", "mark mark-started"]
    label = root.get("aria-label")
    assert "2 (1 open)" in label and "2 started, 1 credited, 1 not credited" in label
    # three shapes: circle, filled diamond (path with Z), cross (path without fill)
    shapes = {g.get("class"): next(iter(g[1:])).tag for g in groups if g.get("class", "").startswith("mark ")}
    assert shapes["mark mark-started"] == f"{NS}circle"
    assert shapes["mark mark-credited"] == f"{NS}path"


def test_timeline_empty_and_many_overlapping():
    root = parse(timeline([], [], NOW - 86400, NOW))
    assert "no incidents" in ET.tostring(root, encoding="unicode")
    many = [Span(NOW - 3600, None, f"c{i}") for i in range(30)]
    root = parse(timeline(many, [], NOW - 86400, NOW, max_lanes=5))
    assert "25 more not drawn" in ET.tostring(root, encoding="unicode")


def test_latency_chart_lines_gaps_and_axes():
    start, end = NOW - 86400, NOW
    pts = [(start + i * 3600, 10.0 + i, 30.0 + i) for i in range(24)]
    pts[5] = (pts[5][0], None, None)  # a gap
    pts[6] = (pts[6][0], float("nan"), float("inf"))
    root = parse(latency_chart(pts, start, end))
    lines = root.findall(f"{NS}polyline")
    assert {p.get("class") for p in lines} == {"p50", "p95"}
    assert len([p for p in lines if p.get("class") == "p50"]) == 2  # broken at the gap
    assert any(p.get("stroke-dasharray") for p in lines if p.get("class") == "p95")  # dashed: not colour alone
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert any(t.endswith(" ms") for t in texts) and "p50" in texts and "p95" in texts
    assert "p95 highest 53 ms" in root.get("aria-label")


def test_latency_chart_no_data():
    root = parse(latency_chart([], NOW - 3600, NOW))
    assert "no data" in root.get("aria-label")
    parse(latency_chart([(NOW - 10, None, None)], NOW - 3600, NOW))


@pytest.mark.parametrize(
    ("value", "state"),
    [
        (10.0, "ok"),
        (85.0, "warning"),
        (97.0, "critical"),
        (None, "no data"),
        (math.nan, "no data"),
        (500.0, "critical"),
    ],
)
def test_gauge_states_in_words(value, state):
    root = parse(gauge(value, label="GPU util", unit="%", warn=80, crit=95))
    assert f"({state})" in root.get("aria-label")
    text = root.find(f"{NS}text").text
    if state == "critical":
        assert text.endswith("!!")
    elif state == "warning":
        assert text.endswith("!") and not text.endswith("!!")
    fill = float(root.find(f"{NS}rect[@class='gauge-fill']").get("width"))
    assert 0 <= fill <= 118


def test_gauge_lower_is_worse_for_a_battery_and_hostile_label():
    assert "(critical)" in parse(gauge(5, label="battery", unit="%", warn=30, crit=10)).get("aria-label")
    assert "(ok)" in parse(gauge(80, label="battery", unit="%", warn=30, crit=10)).get("aria-label")
    root = parse(gauge(50, label=HOSTILE, unit="<°C>", warn=80, crit=90, maximum=110))
    no_script(root)


def test_uptime_bars_merged_runs_keep_every_bar_and_the_down_slots_apart():
    downs: list[float | None] = [0.0] * 48
    downs[20] = 0.25
    downs[30:33] = [None, None, None]
    slots = slots_24h(downs)
    merged = uptime_bars(slots, label="api", merge=True)
    root = parse(merged)
    groups = root.findall(f"{NS}g")
    # up 0-19, down 20, up 21-29, none 30-32, up 33-47
    assert [g.get("class") for g in groups] == [
        "slot slot-up",
        "slot slot-down",
        "slot slot-up",
        "slot slot-none",
        "slot slot-up",
    ]
    line = groups[0].find(f"{NS}line")  # still 20 bars: a dash each
    assert float(line.get("x2")) - float(line.get("x1")) == 20 * 7 - 1
    assert line.get("stroke-dasharray") == "6 1"
    assert "100.00% up" in groups[0].find(f"{NS}title").text
    assert "75.00% up" in groups[1].find(f"{NS}title").text
    assert root.get("aria-label") == parse(uptime_bars(slots, label="api")).get("aria-label")
    assert len(merged) < len(uptime_bars(slots, label="api")) / 3


def test_timeline_width_for_a_phone_or_a_desktop():
    for width in (400, 1200):
        root = parse(timeline([Span(NOW - 3600, None, "x")], [], NOW - 86400, NOW, width=width))
        assert root.get("viewBox").split()[2] == str(width)
        assert float(root.find(f"{NS}g").find(f"{NS}rect").get("x")) < width


@pytest.mark.parametrize("offset", [0.0, 30.0, 600.0, 1790.0])
def test_tick_labels_near_either_end_stay_inside_the_axis(offset: float) -> None:
    """A tick a few pixels from the axis's ends is anchored inwards: its label is not cut to "l8:45"."""
    start = math.ceil(NOW / 1800) * 1800 - offset  # a round tick `offset` seconds after the start
    root = parse(timeline([], [], start, start + 86400))
    axis = [t for t in root.iter(f"{NS}text") if t.text and ":" in t.text]
    assert axis
    xs = [float(t.get("x")) for t in axis]
    first, last = axis[xs.index(min(xs))], axis[xs.index(max(xs))]
    assert first.get("text-anchor") in ("start", "middle")
    assert last.get("text-anchor") in ("end", "middle")
    width = float(root.get("viewBox").split()[2])
    for t in axis:
        x, half = float(t.get("x")), len(t.text) * 2.6
        left = {"start": x, "middle": x - half, "end": x - 2 * half}[t.get("text-anchor")]
        assert left >= 0 and left + 2 * half <= width, (t.text, x, t.get("text-anchor"))
