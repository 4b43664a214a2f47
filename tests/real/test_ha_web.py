"""The web side of a group of monitors: two real `clusterwatch run` processes on one real PostgreSQL.

/metrics on both names one leader and the same epoch, /api/v1/group agrees, the dashboard shows the
group, and after a kill -9 of the leader the survivor's /metrics shows it leading with the next
epoch within the lease and a few seconds, and its dashboard (in a real headless browser) says so.
The tests on the group run in this file's order: the failover comes after the steady state.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clusterwatch.web.server import GROUP_STALE
from tests.helpers import ARTIFACTS, free_port, wait_until
from tests.pg import PASSWORD, PostgresServer
from tests.real.daemon import Daemon

LEASE_S = 4.0
NODE_A = "monitor-a"
NODE_B = "monitor-b<i>&"  # markup in a node name: the dashboard must show it as text
SCREENSHOT = Path("/tmp/ha-dashboard.png")
TOKEN = "ha-web-token-0123456789"


def get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def ha_metrics(d: Daemon) -> dict[str, Any]:
    """The group's series from a monitor's /metrics, parsed by prometheus_client."""
    status, text = get(f"{d.url}/metrics")
    assert status == 200, text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    leaders = families.get("clusterwatch_ha_leader")
    epoch = families.get("clusterwatch_ha_epoch")
    leading = families.get("clusterwatch_ha_leading")
    return {
        "leaders": {s.labels["node"]: s.value for s in leaders.samples} if leaders else {},
        "epoch": int(epoch.samples[0].value) if epoch else None,
        "leading": leading.samples[0].value if leading else None,
    }


def group_api(d: Daemon) -> dict[str, Any]:
    status, text = get(f"{d.url}/api/v1/group")
    assert status == 200, text
    return json.loads(text)  # type: ignore[no-any-return]


def one_leader(d: Daemon, node: str, nodes: set[str]) -> dict[str, Any] | None:
    """The metrics once they name exactly `node` as the one leader among `nodes`; None before."""
    found = ha_metrics(d)
    if found["leaders"] == {n: float(n == node) for n in nodes} and found["epoch"]:
        return found
    return None


def kill_9(d: Daemon) -> None:
    """`kill -9` of the monitor's process alone, as a crash would."""
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.popen.wait(10)
    d.proc.stop()


def monitor(tmp: Path, url: str, node: str) -> Daemon:
    return Daemon(
        tmp,
        {
            "store": {"url": url, "path": str(tmp / "local.db")},  # its own local file, not the default
            "ha": {"enabled": True, "lease": f"{LEASE_S:g}s", "node_name": node},
            "interval": "1s",
            "checks": [{"name": "closed", "kind": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": "1s"}],
        },
    )


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def group(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    """monitor-a started first and leading, then monitor-b following, on one fresh database."""
    url = postgres.create_database("ha_web")
    a = monitor(tmp_path_factory.mktemp("monitor-a"), url, NODE_A)
    b = monitor(tmp_path_factory.mktemp("monitor-b"), url, NODE_B)
    try:
        a.start()
        wait_until(lambda: ha_metrics(a)["leading"] == 1.0, timeout=60, what=f"monitor-a leading\n{a.log()[-3000:]}")
        b.start()
        wait_until(
            lambda: one_leader(b, NODE_A, {NODE_A, NODE_B}),
            timeout=60,
            what=f"monitor-b in the group\n{b.log()[-3000:]}",
        )
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_both_name_one_leader_and_the_same_epoch(group: tuple[Daemon, Daemon]) -> None:
    a, b = group
    nodes = {NODE_A, NODE_B}
    on_a = wait_until(lambda: one_leader(a, NODE_A, nodes), timeout=20, what="monitor-a's /metrics: both members")
    on_b = wait_until(lambda: one_leader(b, NODE_A, nodes), timeout=20, what="monitor-b's /metrics")
    assert on_a["epoch"] == on_b["epoch"]
    assert (on_a["leading"], on_b["leading"]) == (1.0, 0.0)
    for d, node, leading in ((a, NODE_A, True), (b, NODE_B, False)):
        body = group_api(d)
        assert body["ha"] is True and body["stale"] is False and body["error"] is None
        assert body["leader"] == NODE_A
        assert body["lease"]["node"] == NODE_A and body["lease"]["epoch"] == on_a["epoch"]
        assert body["lease"]["expires_at"] > body["lease"]["now"]
        assert {m["node"] for m in body["members"]} == nodes
        assert body["self"]["node"] == node and body["self"]["leading"] is leading
        assert body["self"]["member"].startswith(node + "/")
    described = json.loads(get(f"{b.url}/api/v1/openapi.json")[1])["components"]["schemas"]["Group"]["properties"]
    body = group_api(b)  # every field the answer has is described (schemathesis sees only a monitor alone)
    assert set(body) == set(described)
    for part in ("lease", "self"):
        assert set(body[part]) <= set(described[part]["properties"]), part
    assert set(body["members"][0]) <= set(described["members"]["items"]["properties"])
    took_over = group_api(a)["self"]["log"]
    assert [e["event"] for e in took_over] == ["leader"] and took_over[0]["epoch"] == on_a["epoch"]
    assert group_api(b)["self"]["log"] == []


def test_no_secret_and_everything_escaped(group: tuple[Daemon, Daemon]) -> None:
    a, b = group
    for d in (a, b):
        for route in ("/api/v1/group", "/metrics", "/", "/fragments/group"):
            status, text = get(d.url + route)
            assert status == 200, route
            assert PASSWORD not in text, route
    _, page = get(b.url + "/")
    assert "Group of monitors" in page and "has led for" in page
    assert "<i>" not in page and "monitor-b&lt;i&gt;&amp;" in page
    assert "this monitor" in page and "follows" in page and "none since this monitor started" in page
    _, fragment = get(b.url + "/fragments/group")
    assert fragment.startswith('<section id="group">') and "monitor-b&lt;i&gt;&amp;" in fragment


def test_the_survivor_leads_with_the_next_epoch_after_a_kill_9(group: tuple[Daemon, Daemon]) -> None:
    a, b = group
    before = wait_until(lambda: one_leader(b, NODE_A, {NODE_A, NODE_B}), timeout=20, what="monitor-a leading")
    kill_9(a)
    killed = time.monotonic()
    after = wait_until(
        lambda: (
            (found := ha_metrics(b))["leaders"].get(NODE_B) == 1.0
            and sum(found["leaders"].values()) == 1.0
            and found["epoch"] == before["epoch"] + 1
            and found
        ),
        timeout=LEASE_S + 5,
        interval=0.2,
        what=f"monitor-b's /metrics: leading with epoch {before['epoch'] + 1}\n{b.log()[-3000:]}",
    )
    took = time.monotonic() - killed
    print(f"\nmonitor-b's /metrics named it the leader {took:.2f}s after monitor-a's kill -9 (lease {LEASE_S:g}s)")
    assert after["leaders"].get(NODE_A, 0.0) == 0.0
    wait_until(lambda: ha_metrics(b)["leading"] == 1.0, timeout=30, what=f"monitor-b acting\n{b.log()[-3000:]}")
    body = group_api(b)
    assert body["leader"] == NODE_B and body["lease"]["epoch"] == before["epoch"] + 1
    assert body["self"]["leading"] is True
    assert [(e["event"], e.get("epoch")) for e in body["self"]["log"]] == [("leader", before["epoch"] + 1)]
    _, page = get(b.url + "/fragments/group")
    assert "monitor-b&lt;i&gt;&amp;</b> (this monitor) has led for" in page and "took over" in page


def test_the_dashboard_in_a_browser(group: tuple[Daemon, Daemon]) -> None:
    from tests.real.test_dashboard_browser import ARGS, CHROMIUM

    playwright = pytest.importorskip("playwright.sync_api")
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (make test installs it)"
    """After the failover (the tests above run first): the survivor's dashboard shows it leading."""
    _, b = group
    epoch = ha_metrics(b)["epoch"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(b.url + "/")
            page.wait_for_selector("#group >> text=Members")
            text = page.locator("#group").inner_text()
            assert "Group of monitors" in text
            assert f"{NODE_B} (this monitor) has led for" in text and f"epoch {epoch}" in text  # markup as text
            assert (
                NODE_A in text
                and "took over" in text.lower()
                and f"leads the group of monitors (epoch {epoch})" in text
            )
            assert page.locator("#group i").count() == 0
            # Live: the box is replaced in place by its fragment, without a reload.
            page.evaluate("window.__sameDocument = true; document.querySelector('#group').dataset.old = '1'")
            page.wait_for_selector("#group:not([data-old])", state="attached", timeout=15000)
            assert page.evaluate("window.__sameDocument") is True
            assert "Group of monitors" in page.locator("#group").inner_text()
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-ha-group.png"), full_page=True)
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(b.url + "/")
            phone.wait_for_selector("#group")
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        finally:
            browser.close()


def test_the_store_away_the_group_is_not_guessed(group: tuple[Daemon, Daemon], postgres: PostgresServer) -> None:
    """PostgreSQL killed: the web says it cannot read the group, and /metrics stops naming a leader
    rather than repeat an old answer. (Last: the database stays down for the rest of this module.)"""
    _, b = group
    postgres.kill9()
    wait_until(lambda: group_api(b)["error"], timeout=30, what=f"the failed read shown\n{b.log()[-3000:]}")
    body = wait_until(
        lambda: (found := group_api(b))["stale"] and found,
        timeout=GROUP_STALE + 20,
        what="the last good read of the group called stale",
    )
    assert body["leader"] is None and body["error"]
    assert PASSWORD not in json.dumps(body)
    found = ha_metrics(b)
    assert found == {"leaders": {}, "epoch": None, "leading": None}
    _, fragment = get(b.url + "/fragments/group")
    assert "the shared store could not be read since" in fragment and "unknown" in fragment
    assert PASSWORD not in fragment


def test_alone_there_is_no_group(tmp_path: Path) -> None:
    """A monitor alone: `{"ha": false}`, no group series, no group box; the same auth as the other reads."""
    (tmp_path / "token").write_text(TOKEN)
    port = free_port()
    d = Daemon(
        tmp_path,
        {
            "web": {"listen": f"127.0.0.1:{port}", "token_file": str(tmp_path / "token"), "auth": {"read": True}},
            "checks": [{"name": "closed", "kind": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": "1s"}],
        },
    )
    d.web_port = port
    d.start()
    try:
        wait_until(lambda: get(f"{d.url}/healthz")[0] == 200, timeout=30, what=f"the web\n{d.log()[-2000:]}")
        assert get(f"{d.url}/api/v1/group")[0] == 401
        assert get(f"{d.url}/api/v1/group", TOKEN) == (200, '{"ha":false}')
        assert "clusterwatch_ha_" not in get(f"{d.url}/metrics", TOKEN)[1]
        page = get(f"{d.url}/", TOKEN)[1]
        assert "clusterwatch" in page and "Group of monitors" not in page
        assert get(f"{d.url}/fragments/group", TOKEN) == (200, "")
    finally:
        d.stop()
