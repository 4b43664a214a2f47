"""`/status` under a real `clusterwatch run` with a token and `web.status_page.public: true`.

The page answers without the token; every other route the web serves (listed from the app itself, so a
route added later is covered) still needs it, apart from those open by design: /healthz (liveness for
service managers), /login and the API's description (and the agents' paths, behind their own tokens).
The page holds none of the configured secrets, hosts, ports, node names or hidden checks, and updates in
place in a real Chromium. Screenshots (desktop, phone, dark) go to the test's tmp dir, test-artifacts/ and
$CLUSTERWATCH_SHOTS when set; axe-core (tests/vendor/axe.min.js) finds no serious or critical violation on /status
or on a check's page."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from aiohttp import web

from clusterwatch.agent.protocol import AGENT_PATHS
from clusterwatch.web import server, status_page
from tests.helpers import ARTIFACTS, ServerThread, closed_port, wait_until
from tests.real.daemon import Daemon

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
AXE = Path(__file__).resolve().parent.parent / "vendor" / "axe.min.js"
TOKEN = "tok-status-9f8e7d6c5b4a"
SECRET = "hdr-secret-4c1a9e77b2"
NODE = "gpu-node-7"
HIDDEN = "hidden-internal"
OPEN_BY_DESIGN = server.OPEN_PATHS | {"/status"}


def routes() -> list[tuple[str, str]]:
    """(method, path) of every route the web serves, from the app itself, names filled in."""
    srv = object.__new__(server.WebServer)
    srv.monitor = None  # type: ignore[assignment]
    found = set()
    for route in srv.app().router.routes():
        path = re.sub(r"\{name[^}]*\}", "public-api", route.resource.canonical)
        found.add((route.method, re.sub(r"\{[^}]+\}", "x", path)))
    return sorted(found)


def raw_get(port: int, path: str) -> int:
    """A GET with the path sent as written (no client normalising it first)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def leaks(text: str, forbidden: dict[str, str]) -> list[str]:
    return [what for what, value in forbidden.items() if re.search(value, text, flags=re.I)]


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


def axe(page: Any) -> list[dict[str, Any]]:
    """Serious and critical violations axe-core finds on the page as it stands."""
    page.add_script_tag(content=AXE.read_text())
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def rendered(page: Any) -> str:
    """The page as the browser holds it now, scripts left out (axe's own source is injected by the test)."""
    return page.evaluate(
        "(() => { const c = document.documentElement.cloneNode(true);"
        " c.querySelectorAll('script').forEach(s => s.remove()); return c.outerHTML; })()"
    )


def shot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / "shots" / name
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("CLUSTERWATCH_SHOTS")
    for folder in (ARTIFACTS, *([Path(extra)] if extra else [])):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    return path


def test_public_status_page(tmp_path: Path, browser) -> None:
    health = {"status": 200, "headers": []}

    async def handle(request: web.Request) -> web.Response:
        health["headers"].append(request.headers.get("X-Api-Key"))
        return web.Response(status=health["status"], text="fine" if health["status"] == 200 else "broken")

    app = web.Application()
    app.router.add_get("/health", handle)
    down_port, hidden_port = closed_port(), closed_port()
    with ServerThread(app) as api_server:
        d = Daemon(
            tmp_path,
            {
                "interval": "500ms",
                "fall": 2,
                "rise": 1,
                "checks": [
                    {
                        "name": "public-api",
                        "kind": "http",
                        "url": f"{api_server.url}/health",
                        "headers": {"X-Api-Key": "${API_SECRET}"},
                    },
                    {"name": "public-down", "kind": "tcp", "host": "127.0.0.1", "port": down_port},
                    {"name": HIDDEN, "kind": "tcp", "host": "127.0.0.1", "port": hidden_port},
                ],
                "nodes": [{"name": NODE, "agent": True}],
                "alerts": {
                    "maintenance": [
                        {"match": {"check": "public-*"}, "start": "02:00", "end": "03:30", "reason": "planned upgrade"},
                        {"match": {"check": HIDDEN}, "start": "04:00", "end": "05:00", "reason": "hidden work"},
                    ]
                },
                "web": {
                    "token": "${CW_TOKEN}",
                    "status_page": {"title": "Cluster status", "checks": ["public-*"], "public": True},
                },
            },
            env={"CW_TOKEN": TOKEN, "API_SECRET": SECRET},
        )
        config = yaml.safe_load(d.config_path.read_text())
        config["web"]["listen"] = f"127.0.0.1:{d.web_port}"  # the config's own web section replaced the default's
        d.write(config)
        forbidden = {
            "the web token": re.escape(TOKEN),
            "the header secret": re.escape(SECRET),
            "a loopback address": r"127\.0\.0\.1|localhost|::1",
            "a URL": r"https?://(?!www\.w3\.org/2000/svg)",
            "the API's port": rf"\b{api_server.port}\b",
            "the down service's port": rf"\b{down_port}\b",
            "the hidden check's port": rf"\b{hidden_port}\b",
            "the web's port": rf"\b{d.web_port}\b",
            "a node name": re.escape(NODE),
            "the hidden check": re.escape(HIDDEN),
            "the hidden window": "hidden work",
            "a probe's message": r"connection refused|is the service running|HTTP 503|broken",
            "a header's name": r"X-Api-Key",
            "this machine's name": rf"\b{re.escape(socket.gethostname())}\b",
        }
        d.start()
        try:
            status_url = d.url + "/status"
            wait_until(
                lambda: (e := d.entity("public-down")) is not None and e["hard"] == "critical" and e["incident"],
                timeout=30,
                what="public-down critical with an incident",
            )
            wait_until(lambda: (e := d.entity("public-api")) is not None and e["hard"] == "ok", timeout=30, what="ok")
            wait_until(lambda: SECRET in health["headers"], what="the secret header sent to the service")

            # --- without the token: /status only ----------------------------------------------------
            page = wait_until(
                lambda: (
                    (r := requests.get(status_url, timeout=10)).status_code == 200
                    and 'data-incident="public-down"' in r.text
                    and r.text
                ),
                timeout=30,
                what="/status with public-down's incident",
            )
            assert 'data-service="public-api" data-status="ok"' in page
            assert 'data-service="public-down" data-status="critical"' in page
            assert page.count('class="uptime-bars"') == 2 and "planned upgrade" in page
            assert re.search(r'<span class="uptime">(\d{1,3}\.\d\d%|no data)</span>', page)
            assert leaks(page, forbidden) == []
            assert requests.head(status_url, timeout=10).status_code == 200

            for method, path in routes():
                if path in OPEN_BY_DESIGN:
                    continue
                for headers in ({}, {"Authorization": "Bearer wrong-token-123"}):
                    r = requests.request(method, d.url + path, headers=headers, allow_redirects=False, timeout=30)
                    login = r.status_code == 302 and r.headers.get("Location") == "/login"
                    assert r.status_code == 401 or login, (method, path, headers, r.status_code)
                    assert not leaks(r.text, {"the header secret": re.escape(SECRET), "token": re.escape(TOKEN)})
                if method == "GET" and path not in AGENT_PATHS:  # with the token it answers
                    r = requests.get(
                        d.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, allow_redirects=False, timeout=30
                    )
                    assert r.status_code not in (401, 302), (path, r.status_code)
            for tricky in ("/status/", "/Status", "/status/../api/v1/status", "/status/..%2fapi/v1/status", "//status"):
                assert raw_get(d.web_port, tricky) in (302, 401, 404), tricky
            assert requests.post(status_url, timeout=10).status_code == 401
            for path in sorted(server.OPEN_PATHS):  # open by design: nothing secret or internal in them either
                r = requests.get(d.url + path, timeout=10)
                assert r.status_code in (200, 503), path
                assert (
                    leaks(r.text, {k: forbidden[k] for k in ("the web token", "the header secret", "a node name")})
                    == []
                )
            assert "/status" in status_page.PATHS and len(status_page.PATHS) == 1

            # --- in a real browser: screenshots, live update, no console errors, axe -----------------
            errors: list[str] = []
            desk = browser.new_page(viewport={"width": 1280, "height": 900})
            desk.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            desk.on("pageerror", lambda e: errors.append(str(e)))
            desk.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            desk.goto(status_url)
            desk.wait_for_selector('[data-service="public-down"][data-status="critical"]')
            shot(desk, tmp_path, "status-desktop.png")
            assert axe(desk) == []
            desk.evaluate("window.__sameDocument = true")
            health["status"] = 503  # public-api breaks: the page says so without a reload
            desk.wait_for_selector('[data-service="public-api"][data-status="critical"]', timeout=40000)
            desk.wait_for_selector('[data-incident="public-api"]', timeout=20000)
            assert desk.evaluate("window.__sameDocument") is True
            assert leaks(rendered(desk), forbidden) == []
            shot(desk, tmp_path, "status-desktop-incident.png")
            health["status"] = 200

            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(status_url)
            phone.wait_for_selector('[data-service="public-api"]')
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            shot(phone, tmp_path, "status-phone.png")

            dark = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme="dark")
            dark.goto(status_url)
            dark.wait_for_selector('[data-service="public-api"]')
            shot(dark, tmp_path, "status-dark.png")
            assert axe(dark) == []
            assert errors == []

            # A check's page, with the token: its config shows the header, its secret masked.
            context = browser.new_context(
                viewport={"width": 1280, "height": 900}, extra_http_headers={"Authorization": f"Bearer {TOKEN}"}
            )
            check = context.new_page()
            check.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            check.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            check.goto(d.url + "/checks/public-api")
            check.wait_for_selector("#latency svg.latency-chart")
            check.wait_for_selector("#incidents svg.timeline")
            text = rendered(check)
            assert "X-Api-Key" in text and SECRET not in text and TOKEN not in text
            shot(check, tmp_path, "check-page.png")
            assert axe(check) == []
            assert errors == []

            # Once a minute is written, the bars and the percentage by time come from it.
            page = wait_until(
                lambda: (
                    re.search(
                        r'data-service="public-down".*?class="slot slot-down".*?<span class="uptime">0\.00%</span>',
                        (r := requests.get(status_url, timeout=10)).text,
                        flags=re.S,
                    )
                    and r.text
                ),
                timeout=150,
                interval=2,
                what="public-down's first written minute on /status",
            )
            assert leaks(page, forbidden) == []
            assert "incident: not available (critical)" in page  # the bar under the pointer: the word only
        finally:
            d.stop()
