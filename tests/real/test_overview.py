"""The overview in a real headless Chromium against a real `clusterwatch run`: a real Dask worker on a real SSH
node is killed under the monitor; the node's box and the worker turn critical, the incident appears on the
timeline and the healer's marks after it, all without a reload and without a console error. Screenshots of
desktop and phone, light and dark, go to test-artifacts/ (and to $CLUSTERWATCH_SHOTS when set)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest

from tests.helpers import ARTIFACTS, free_port, port_open, wait_until
from tests.real.daemon import Daemon
from tests.real.sshd import SSHServer

AXE = Path(__file__).resolve().parent.parent / "vendor" / "axe.min.js"
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


def axe(page) -> list[dict]:
    """Serious and critical violations axe-core (vendored) finds on the page as it stands."""
    page.add_script_tag(content=AXE.read_text())
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def shots(page, name: str) -> None:
    paths = [ARTIFACTS / f"overview-{name}.png"]
    if os.environ.get("CLUSTERWATCH_SHOTS"):
        paths.append(Path(os.environ["CLUSTERWATCH_SHOTS"]) / f"overview-{name}.png")
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
        # the worker's incident as a bar on the strip (a selector, not wait_for_function: polling a string
        # needs eval, which the page's Content-Security-Policy refuses)
        page.locator("#timeline g.incident", has_text="dask/w1").first.wait_for(state="attached", timeout=10000)
        page.wait_for_selector('#attention li[data-key="incident:dask/w1"]', timeout=10000)
        shots(page, "desktop-light-critical")
        assert axe(page) == []
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
        assert axe(dark) == []

        for scheme in ("light", "dark"):
            phone = browser.new_page(viewport={"width": 390, "height": 844}, color_scheme=scheme, is_mobile=True)
            phone.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            phone.goto(d.url + "/")
            phone.wait_for_selector(WORKER)
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            shots(phone, f"phone-{scheme}")
            assert axe(phone) == []
        assert errors == []
    finally:
        d.stop()
    assert [a["outcome"] for a in d.actions("dask")] == ["succeeded"]


TOKEN = "overview-token-5b1e"


def post(url: str, body: object, token: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_attention_buttons_silence_and_reset_with_the_token(tmp_path: Path, browser):
    """A service the healer gave up on: its reset button asks for the token, then the healer resets its budget
    (the command is taken); its silence button silences it and it moves to the silenced problems."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    closed, port = free_port(), free_port()
    d = Daemon(
        tmp_path,
        {
            "interval": "500ms",
            "web": {"listen": f"127.0.0.1:{port}", "token_file": str(tmp_path / "token")},
            "checks": [
                {
                    "name": "api",
                    "kind": "http",
                    "url": f"http://127.0.0.1:{closed}/",
                    "restart": {"command": ["/bin/false"], "max_attempts": 1, "verify_timeout": "2s"},
                }
            ],
        },
    )
    d.web_port = port
    d.start()
    try:
        d.wait_event("remediation_exhausted", "api", timeout=30)
        base = d.url
        assert post(f"{base}/api/v1/heal/reset", {"name": "api"})[0] == 401  # a change needs the token
        assert post(f"{base}/api/v1/heal/reset", {"name": "nope"}, TOKEN)[0] == 404
        assert post(f"{base}/api/v1/heal/reset", {"name": 3}, TOKEN)[0] == 400

        errors: list[str] = []
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(base + "/")
        page.wait_for_selector('#needs-person button[data-act="reset"]', timeout=15000)
        page.click('#needs-person button[data-act="reset"]')
        page.wait_for_selector("#token-dialog[open]", timeout=5000)
        page.fill("#token-input", TOKEN)
        page.keyboard.press("Enter")  # the dialog's first button: use it
        page.wait_for_selector("#act-status:has-text('asked the healer')", timeout=10000)
        wait_until(
            lambda: d.query("SELECT done FROM commands WHERE kind = 'heal_reset' AND target = 'api'")[0]["done"],
            timeout=30,
            what="the monitor taking the reset",
        )

        page.wait_for_selector('#attention button[data-act="silence"][data-entity="api"]', timeout=10000)
        page.click('#attention button[data-act="silence"][data-entity="api"]')  # the token is kept for the tab
        page.wait_for_selector("#act-status:has-text('silenced api for 1 h')", timeout=10000)
        page.wait_for_selector('#attention li[data-key="silenced:api"] button[data-act="unsilence"]', timeout=10000)
        page.keyboard.press("Tab")  # keyboard reachable: focus moves to a control, with a visible outline
        assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON", "INPUT", "SELECT")
        page.click('#attention li[data-key="silenced:api"] button[data-act="unsilence"]')
        page.wait_for_selector("#act-status:has-text('silence ended')", timeout=10000)
        page.wait_for_selector('#attention li[data-key="incident:api"]', timeout=10000)
        shots(page, "attention-buttons")
        assert axe(page) == []
        assert errors == []
    finally:
        d.stop()
