"""The overview in a real headless Chromium against a real `clusterwatch run`: a real Dask worker on a real SSH
node is killed under the monitor; the node's box and the worker turn critical, the incident appears on the
timeline and the healer's marks after it, all without a reload and without a console error. Screenshots of
desktop and phone, light and dark, go to test-artifacts/ (and to $OVERVIEW_SHOTS when set)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import xmlrpc.client
from pathlib import Path

import pytest

from tests.helpers import ARTIFACTS, free_port, port_open, wait_until
from tests.real.daemon import Daemon
from tests.real.sshd import SSHServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
WORKER = '#cluster [data-name="dask/w1"]'
NODE = '#cluster article[data-node="n1"]'


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (make test installs it)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def sshd(tmp_path: Path):
    server = SSHServer(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def web_service(tmp_path: Path):
    """A plain HTTP service on the node (its page), for a second box entity and a dependency line."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(port), timeout=15, what="the HTTP service")
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def shots(page, name: str) -> None:
    paths = [ARTIFACTS / f"overview-{name}.png"]
    if os.environ.get("OVERVIEW_SHOTS"):
        paths.append(Path(os.environ["OVERVIEW_SHOTS"]) / f"overview-{name}.png")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)


def test_killed_worker_turns_its_node_critical_on_the_picture_and_the_timeline(
    tmp_path: Path, supervised_worker, sshd: SSHServer, web_service: int, browser
):
    cluster, url = supervised_worker
    d = Daemon(
        tmp_path,
        {
            "interval": "500ms",
            "nodes": [
                {
                    **sshd.node("n1"),
                    "expect_dask_worker": True,
                    "interval": "2s",
                    # a busy test machine is no incident: its own resources are not what is tested here
                    "thresholds": {k: {"warning": None, "critical": None} for k in ("cpu", "memory", "disk")},
                }
            ],
            "checks": [
                {
                    "name": "dask",
                    "kind": "dask",
                    "scheduler": cluster.address,
                    "dashboard": cluster.dashboard,
                    "expect_workers": ["w1"],
                    "restart": {
                        "supervisor": "dask-worker-w1",
                        "supervisor_url": url,
                        "grace": "3s",
                        "verify_timeout": "30s",
                    },
                },
                {
                    "name": "notebook",
                    "kind": "http",
                    "url": f"http://127.0.0.1:{web_service}/",
                    "node": "n1",
                    "depends_on": ["dask"],
                },
            ],
        },
    )
    d.start()
    try:
        for name in ("dask/w1", "n1", "notebook"):  # all seen: a new entity would reload the page
            wait_until(lambda n=name: (e := d.entity(n)) is not None and e["hard"] == "ok", timeout=30, what=name)
        errors: list[str] = []
        page = browser.new_page(viewport={"width": 1366, "height": 900}, color_scheme="light")
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(d.url + "/")
        page.wait_for_selector(f'{WORKER}[data-status="ok"]', timeout=15000)
        page.wait_for_selector(f'{NODE}[data-status="ok"]', timeout=15000)
        assert page.locator(f"{NODE} .title").inner_text() == "n1"
        assert page.locator("#attention h2").first.inner_text().endswith("Nothing needs attention")
        page.evaluate("window.__sameDocument = true")
        page.click('#timeline button[data-span="1h"]')  # the last hour: a short incident is wide enough to see
        page.wait_for_selector('#timeline button[data-span="1h"][aria-pressed="true"]', timeout=5000)
        page.click("#deps-toggle")  # dependency lines: the notebook depends on dask
        page.wait_for_selector("#deps line", state="attached", timeout=5000)
        shots(page, "desktop-light-ok")

        pid = xmlrpc.client.ServerProxy(url).supervisor.getProcessInfo("dask-worker-w1")["pid"]
        os.kill(pid, signal.SIGKILL)
        page.wait_for_selector(f'{WORKER}[data-status="critical"]', timeout=20000)
        page.wait_for_selector(f'{NODE}[data-status="critical"]', timeout=10000)
        assert page.locator(f"{WORKER} .word").inner_text() == "critical"  # a word, not colour alone
        assert page.locator(f"{NODE} h3 .word").inner_text() == "critical"
        page.wait_for_function(  # the worker's incident as a bar on the strip
            "[...document.querySelectorAll('#timeline g.incident title')].some(t => t.textContent.includes('dask/w1'))",
            timeout=10000,
        )
        page.wait_for_selector('#attention li[data-key="incident:dask/w1"]', timeout=10000)
        shots(page, "desktop-light-critical")
        page.wait_for_selector("#timeline g.mark", state="attached", timeout=30000)  # the healer's first mark

        page.wait_for_selector(f'{WORKER}[data-status="ok"]', timeout=60000)
        page.wait_for_selector(f'{NODE}[data-status="ok"]', timeout=10000)
        page.wait_for_selector("#timeline g.mark-credited", state="attached", timeout=20000)
        assert page.evaluate("window.__sameDocument") is True  # all of it live, never reloaded
        shots(page, "desktop-light-healed")

        dark = browser.new_page(viewport={"width": 1366, "height": 900}, color_scheme="dark")
        dark.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        dark.goto(d.url + "/")
        dark.wait_for_selector(WORKER)
        assert dark.evaluate("getComputedStyle(document.body).backgroundColor") != "rgb(243, 244, 247)"
        shots(dark, "desktop-dark")

        for scheme in ("light", "dark"):
            phone = browser.new_page(viewport={"width": 390, "height": 844}, color_scheme=scheme, is_mobile=True)
            phone.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            phone.goto(d.url + "/")
            phone.wait_for_selector(WORKER)
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            shots(phone, f"phone-{scheme}")
        assert errors == []
    finally:
        d.stop()
    assert [a["outcome"] for a in d.actions("dask")] == ["succeeded"]
