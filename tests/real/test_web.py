"""The web side of `clusterwatch run`: API with and without the token, no secret anywhere,
/metrics parsed by prometheus_client, the OpenAPI document fuzzed by schemathesis."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Proc, free_port, run_cli, wait_until
from tests.real.daemon import Daemon

TOKEN = "web-token-0123456789abcdef"
API_SECRET = "api-secret-5550123"
SMTP_PASSWORD = "smtp-pass-8675309"


def request(
    url: str, method: str = "GET", token: str | None = None, body: object = None, cookie: str | None = None
) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = cookie
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A monitor with a token, secrets in its config, something healthy and something failing."""
    tmp = tmp_path_factory.mktemp("web")
    (tmp / "token").write_text(TOKEN + "\n")
    service = Proc(
        [sys.executable, "-m", "http.server", str(port := free_port()), "--bind", "127.0.0.1"], tmp / "svc.log"
    )
    d = Daemon(
        tmp,
        {
            "interval": "300ms",
            "web": {"listen": f"127.0.0.1:{free_port()}", "token_file": str(tmp / "token")},
            "alerts": {
                "channels": {
                    "mail": f"mailto://alerts:{SMTP_PASSWORD}@127.0.0.1:{free_port()}"
                    "?from=cw@example.org&to=oncall@example.org"
                }
            },
            "checks": [
                {
                    "name": "site",
                    "kind": "http",
                    "url": f"http://127.0.0.1:{port}/",
                    "headers": {"Authorization": "Bearer ${API_SECRET}"},
                },
                {
                    "name": "api",
                    "kind": "tcp",
                    "port": free_port(),
                    "restart": {
                        "command": ["/bin/echo", "${API_SECRET}"],
                        "max_attempts": 1,
                        "verify_timeout": "500ms",
                    },
                },
                {"name": "system", "kind": "node", "cpu_sample": "100ms"},
            ],
        },
        env={"API_SECRET": API_SECRET},
    )
    import yaml

    d.web_port = int(yaml.safe_load(d.config_path.read_text())["web"]["listen"].rsplit(":", 1)[1])
    d.start()
    wait_until(lambda: request(f"{d.url}/healthz")[0] == 200, timeout=30, what="the web server")
    d.wait_event("remediation_exhausted", "api", timeout=30)
    yield d
    d.stop()
    service.stop()


READ_ROUTES = [
    "/api/v1/status",
    "/api/v1/status?status=critical",
    "/api/v1/checks",
    "/api/v1/checks/api",
    "/api/v1/checks/api/history?limit=5",
    "/api/v1/events?limit=5",
    "/api/v1/incidents?state=open",
    "/api/v1/actions",
    "/api/v1/silences",
    "/api/v1/group",
    "/api/v1/openapi.json",
    "/metrics",
    "/healthz",
    "/",
    "/checks/api",
    "/checks/system/disk:/",
    "/?q=sys&status=ok",
]


def test_reading_is_open_by_default_writing_needs_the_token(web: Daemon):
    for route in READ_ROUTES:
        status, _ = request(web.url + route)
        assert status == 200, route
    body = {"matchers": {"check": "api"}, "duration": "1h", "reason": "maintenance"}
    assert request(f"{web.url}/api/v1/silences", "POST", body=body)[0] == 401
    assert request(f"{web.url}/api/v1/silences", "POST", token="wrong", body=body)[0] == 401
    status, text = request(f"{web.url}/api/v1/silences", "POST", token=TOKEN, body=body)
    assert status == 201, text
    silence = json.loads(text)
    listed = json.loads(request(f"{web.url}/api/v1/silences")[1])["items"]
    assert [s["id"] for s in listed] == [silence["id"]]
    assert request(f"{web.url}/api/v1/silences/{silence['id']}", "DELETE")[0] == 401
    assert request(f"{web.url}/api/v1/silences/{silence['id']}", "DELETE", token=TOKEN)[0] == 204
    assert request(f"{web.url}/api/v1/silences/{silence['id']}", "DELETE", token=TOKEN)[0] == 404
    assert request(f"{web.url}/api/v1/silences", "POST", token=TOKEN, body={"matchers": {}})[0] == 400
    assert request(f"{web.url}/api/v1/events?limit=nope")[0] == 400
    assert request(f"{web.url}/api/v1/checks/no-such-check")[0] == 404


def test_no_secret_in_any_answer(web: Daemon):
    for route in READ_ROUTES:
        _, text = request(web.url + route, token=TOKEN)
        for secret in (TOKEN, API_SECRET, SMTP_PASSWORD):
            assert secret not in text, f"{secret} in {route}"
    actions = json.loads(request(f"{web.url}/api/v1/actions")[1])["items"]
    assert actions and "/bin/echo ***" in actions[0]["detail"]


def test_status_and_pagination(web: Daemon):
    data = json.loads(request(f"{web.url}/api/v1/status")[1])
    by_name = {c["name"]: c for c in data["checks"]}
    assert by_name["api"]["status"] == "critical" and by_name["site"]["status"] == "ok"
    assert data["status"] == "critical" and data["open_incidents"] >= 1
    changed = json.loads(request(f"{web.url}/api/v1/status?since_version={data['version']}")[1])
    assert changed["version"] >= data["version"]
    first = json.loads(request(f"{web.url}/api/v1/checks/api/history?limit=3")[1])
    second = json.loads(request(f"{web.url}/api/v1/checks/api/history?limit=3&before={first['next']}")[1])
    assert len(first["items"]) == 3 and first["next"] is not None
    assert max(i["id"] for i in second["items"]) < min(i["id"] for i in first["items"])


def test_metrics_match_the_observations(web: Daemon):
    _, text = request(f"{web.url}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    statuses = {s.labels["name"]: s.value for s in families["clusterwatch_check_status"].samples}
    api_status = json.loads(request(f"{web.url}/api/v1/checks/api")[1])["status"]
    assert statuses["api"] == {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}[api_status] == 2
    assert statuses["site"] == 0
    cpu = families["clusterwatch_node_cpu_percent"].samples[0]
    assert cpu.labels["name"] == "system" and 0 <= cpu.value <= 100
    assert families["clusterwatch_open_incidents"].samples[0].value >= 1
    wait_until(
        lambda: "clusterwatch_restarts_total{" in request(f"{web.url}/metrics")[1], timeout=15, what="restart counters"
    )
    text = request(f"{web.url}/metrics")[1]
    restarts = {f.name: f for f in text_string_to_metric_families(text)}["clusterwatch_restarts"]
    assert any(
        s.labels == {"check": "api", "action": "command", "outcome": "failed"} and s.value == 1
        for s in restarts.samples
    )


def test_read_auth_when_asked(tmp_path: Path):
    (tmp_path / "token").write_text(TOKEN)
    d = Daemon(
        tmp_path,
        {
            "web": {
                "listen": f"127.0.0.1:{free_port()}",
                "token_file": str(tmp_path / "token"),
                "auth": {"read": True},
            },
            "checks": [{"name": "api", "kind": "tcp", "port": 1}],
        },
    )
    import yaml

    d.web_port = int(yaml.safe_load(d.config_path.read_text())["web"]["listen"].rsplit(":", 1)[1])
    d.start()
    try:
        wait_until(lambda: request(f"{d.url}/healthz")[0] == 200, what="web")
        assert request(f"{d.url}/api/v1/status")[0] == 401
        assert request(f"{d.url}/metrics")[0] == 401
        assert request(f"{d.url}/api/v1/status", token=TOKEN)[0] == 200
        status, text = request(f"{d.url}/", cookie=f"clusterwatch_token={TOKEN}")
        assert status == 200 and "clusterwatch" in text
        status, text = request(f"{d.url}/")  # the browser is sent to the login form
        assert status == 200 and 'type="password"' in text
    finally:
        d.stop()


def test_binding_elsewhere_without_a_token_is_refused(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("web:\n  listen: 0.0.0.0:9877\n")
    result = run_cli("config", "validate", "-c", str(config))
    assert result.returncode == 3
    assert f"{config}:2: web.listen: refusing to listen on 0.0.0.0:9877 without a token" in result.stderr


def test_schemathesis_finds_no_server_error(web: Daemon, tmp_path: Path):
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{web.url}/api/v1/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    total = re.search(r"Operations:\s+(\d+) selected / (\d+) total", result.stdout)
    assert total and total[1] == total[2] and int(total[2]) >= 12, result.stdout[-3000:]  # POST heal/reset made 12
    assert f"Tested: {total[2]}" in result.stdout and " generated, " in result.stdout, result.stdout[-3000:]
