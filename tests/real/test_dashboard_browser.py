"""The dashboard in a real headless browser: a killed Dask worker turns critical, then healthy again
after the healer restarts it through supervisord, without a reload. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import signal
import xmlrpc.client
from pathlib import Path

import pytest

from tests.helpers import ARTIFACTS, wait_until
from tests.real.daemon import Daemon

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


def test_killed_worker_turns_critical_then_healthy_live(tmp_path: Path, supervised_worker, browser):
    cluster, url = supervised_worker
    d = Daemon(
        tmp_path,
        {
            "interval": "500ms",
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
                }
            ],
        },
    )
    ARTIFACTS.mkdir(exist_ok=True)
    d.start()
    try:
        wait_until(lambda: (e := d.entity("dask/w1")) is not None and e["hard"] == "ok", timeout=20, what="w1 ok")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(d.url + "/")
        row = '[data-name="dask/w1"]'
        page.wait_for_selector(f'{row}[data-status="ok"]', timeout=15000)
        assert page.locator("h2", has_text="Dask workers").count() == 1
        page.evaluate("window.__sameDocument = true")
        pid = xmlrpc.client.ServerProxy(url).supervisor.getProcessInfo("dask-worker-w1")["pid"]
        os.kill(pid, signal.SIGKILL)
        page.wait_for_selector(f'{row}[data-status="critical"]', timeout=20000)
        assert "not connected" in page.locator(f"{row} .msg").inner_text()
        page.screenshot(path=str(ARTIFACTS / "dashboard-worker-killed.png"), full_page=True)
        page.wait_for_selector(f'{row}[data-status="ok"]', timeout=60000)
        assert page.evaluate("window.__sameDocument") is True  # updated live, never reloaded
        page.screenshot(path=str(ARTIFACTS / "dashboard-worker-healed.png"), full_page=True)
        page.goto(d.url + "/checks/dask/w1")
        page.wait_for_selector("text=Recent observations")
        page.screenshot(path=str(ARTIFACTS / "dashboard-check-page.png"), full_page=True)
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(d.url + "/")
        phone.wait_for_selector(row)
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    finally:
        d.stop()
    [action] = d.actions("dask")
    assert action["outcome"] == "succeeded"
