"""The front page says when a person is needed: a real `clusterwatch run` whose restarts keep failing
gives up (`remediation_exhausted`), and `/` shows a banner naming the check, since when, the last
attempt's detail and the command that resets it (escaped), `/api/v1/status` lists it in `needs_person`;
it stays while the target is fixed by hand (the budget comes back only after `stable_for`) and goes on
`heal reset`, or by itself when the target stays healthy for `stable_for`. In a real headless Chromium
too: the banner is seen, then goes without a reload."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Proc, free_port, port_open, run_cli, wait_until
from tests.real.daemon import Daemon
from tests.real.test_dashboard_browser import ARGS, CHROMIUM

HOSTILE = "<b>not</b> & fixed"


def failing(name: str) -> list[str]:
    """A restart that keeps failing, saying so; one per check (one target is one budget)."""
    return ["/bin/sh", "-c", f"echo '{HOSTILE}' {name}; exit 1"]


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode()


def needs_person(d: Daemon) -> list[dict[str, Any]]:
    return json.loads(get(f"{d.url}/api/v1/status")[1])["needs_person"]


def restart(name: str, stable_for: str) -> dict[str, Any]:
    return {"command": failing(name), "max_attempts": 1, "backoff": "100ms", "verify_timeout": "500ms"} | {
        "stable_for": stable_for
    }


@pytest.fixture
def monitor(tmp_path: Path):
    """`api` and `db` down, their restarts failing; `api` gets its budget back only after an hour healthy."""
    ports = {"api": free_port(), "db": free_port()}
    d = Daemon(
        tmp_path,
        {
            "interval": "200ms",
            "checks": [
                {"name": "api", "kind": "tcp", "port": ports["api"], "restart": restart("api", "1h")},
                {"name": "db", "kind": "tcp", "port": ports["db"], "restart": restart("db", "1s")},
            ],
        },
    )
    d.ports = ports  # type: ignore[attr-defined]
    d.start()
    try:
        wait_until(lambda: port_open(d.web_port), timeout=30, what=f"the web server\n{d.log()[-2000:]}")
        yield d
    finally:
        d.stop()


def serve(tmp_path: Path, port: int) -> Proc:
    """The fix a person makes by hand: something listens on the check's port again."""
    proc = Proc([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], tmp_path / f"fix-{port}.log")
    wait_until(lambda: port_open(port), timeout=30, what=f"the fixed service on {port}")
    return proc


def test_banner_until_reset_or_recovery(monitor: Daemon, tmp_path: Path):
    d = monitor
    for name in ("api", "db"):
        d.wait_event("remediation_exhausted", name, timeout=60)
    found = wait_until(lambda: len(items := needs_person(d)) == 2 and items, timeout=30, what="both in the API")
    by_check = {item["check"]: item for item in found}
    api = by_check["api"]
    assert api["entity"] == "api" and api["target"] == f"command:{' '.join(failing('api'))}"
    assert api["attempts"] == 1 and api["healthy_since"] is None and api["reset"] == "clusterwatch heal reset api"
    assert api["last_attempt"]["outcome"] == "failed" and HOSTILE in api["last_attempt"]["detail"]
    [exhausted] = d.query("SELECT exhausted FROM heal_budgets WHERE target = ?", api["target"])
    assert api["since"] == exhausted[0]

    _, page = get(f"{d.url}/")
    banner = page[page.index('<section id="needs-person"') : page.index("</section>", page.index("needs-person"))]
    assert page.index('id="needs-person"') < page.index('<form class="filters"')  # at the top
    assert "A person is needed (2)" in banner and "<code>clusterwatch heal reset api</code>" in banner
    assert "<b>not</b>" not in page and "&lt;b&gt;not&lt;/b&gt; &amp; fixed" in banner
    assert get(f"{d.url}/fragments/needs-person")[1].startswith('<section id="needs-person" role="alert">')

    fixes = [serve(tmp_path, d.ports["db"]), serve(tmp_path, d.ports["api"])]  # type: ignore[attr-defined]
    try:
        # db's budget comes back after 1 s healthy: its banner goes by itself; api's needs the reset.
        wait_until(lambda: [i["check"] for i in needs_person(d)] == ["api"], timeout=60, what="db back by itself")
        still = wait_until(lambda: (i := needs_person(d)) and i[0]["healthy_since"] and i, timeout=30, what="healthy")
        assert "healthy again since" in get(f"{d.url}/")[1]
        done = run_cli("heal", "reset", "api", "-c", str(d.config_path), "--wait", "60")
        assert done.returncode == 0, done
        assert done.stdout.startswith(f"reset the restart budget of {still[0]['target']} (was exhausted since ")
        assert done.stdout.endswith(" after 1 attempt)\n"), done.stdout
        wait_until(lambda: needs_person(d) == [], timeout=30, what="the banner gone from the API")
        _, page = get(f"{d.url}/")
        assert '<section id="needs-person" hidden></section>' in page and "A person is needed" not in page
        again = run_cli("heal", "reset", "api", "-c", str(d.config_path), "--wait", "0")
        assert again.returncode == 3 and "nothing to reset" in again.stderr, again
    finally:
        for fix in fixes:
            fix.stop()


def test_banner_in_a_real_browser_goes_live_after_the_reset(monitor: Daemon, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    d = monitor
    d.wait_event("remediation_exhausted", "api", timeout=60)
    wait_until(lambda: "api" in [i["check"] for i in needs_person(d)], timeout=30, what="api in the API")
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (make test installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(d.url + "/")
            page.wait_for_selector("#needs-person li", timeout=15000)
            page.screenshot(path=str(tmp_path / "banner.png"), full_page=True)
            dom = page.content()  # the DOM as the browser has it
            (tmp_path / "banner.html").write_text(dom)
            text = page.locator("#needs-person").inner_text()
            assert "A person is needed" in text and "the healer gave up on" in text, text
            assert "clusterwatch heal reset api" in text and HOSTILE in text  # shown as text, not markup
            assert page.locator("#needs-person b", has_text="not").count() == 0
            page.evaluate("window.__sameDocument = true")
            fix = serve(tmp_path, d.ports["api"])  # type: ignore[attr-defined]
            try:
                wait_until(lambda: (e := d.entity("api")) is not None and e["hard"] == "ok", timeout=30, what="ok")
                assert run_cli("heal", "reset", "api", "-c", str(d.config_path), "--wait", "60").returncode == 0
                wait_until(
                    lambda: "heal reset api" not in page.locator("#needs-person").inner_text(),
                    timeout=30,
                    interval=0.5,
                    what="the banner's api line gone in place",
                )
                assert page.evaluate("window.__sameDocument") is True  # refreshed in place, never reloaded
                page.screenshot(path=str(tmp_path / "banner-after-reset.png"), full_page=True)
            finally:
                fix.stop()
        finally:
            browser.close()
    assert (tmp_path / "banner.png").stat().st_size > 10_000
