"""Plain HTTP and TCP checks against real local servers, TLS included."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

import pytest
from aiohttp import web

from clusterwatch.model import Status
from tests.conftest import observe
from tests.helpers import ServerThread, closed_port


def make_cert(tmp_path: Path, days: float) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"cert{days}.pem", tmp_path / f"key{days}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def app() -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "UP", "db": {"ok": True}, "items": [{"id": 7}]})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.4)
        return web.Response(text="finally")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=502, text="bad gateway")

    application = web.Application()
    application.router.add_get("/health", health)
    application.router.add_get("/slow", slow)
    application.router.add_get("/broken", broken)
    return application


@pytest.fixture(scope="module")
def server():
    with ServerThread(app()) as srv:
        yield srv


def http(url: str, **extra) -> dict:
    return {"checks": [{"name": "api", "kind": "http", "url": url, "timeout": "2s", **extra}]}


def test_ok_with_body_and_json_conditions(tmp_path: Path, server):
    obs = observe(
        tmp_path,
        http(f"{server.url}/health", body_contains="UP", expect_json={"status": "UP", "db.ok": True, "items[0].id": 7}),
    )["api"]
    assert obs.status is Status.OK and obs.message.startswith("HTTP 200 in")
    assert obs.metrics["http_status"] == 200


def test_json_condition_fails(tmp_path: Path, server):
    obs = observe(tmp_path, http(f"{server.url}/health", expect_json={"status": "DOWN", "nope": 1}))["api"]
    assert obs.status is Status.CRITICAL
    assert obs.message == "JSON field status is 'UP', expected 'DOWN'; JSON field nope is missing"


def test_status_and_body(tmp_path: Path, server):
    assert observe(tmp_path, http(f"{server.url}/broken"))["api"].message == "HTTP 502"
    wrong = observe(tmp_path, http(f"{server.url}/health", expect_status=204, body_contains="DOWN"))["api"]
    assert wrong.status is Status.CRITICAL
    assert wrong.message == "HTTP 200, expected 204; body does not contain 'DOWN'"


def test_latency_threshold(tmp_path: Path, server):
    obs = observe(tmp_path, http(f"{server.url}/slow", latency_warning="100ms", latency_critical="5s"))["api"]
    assert obs.status is Status.WARNING and obs.message.startswith("slow: ")


def test_refused_is_fast_and_explained(tmp_path: Path):
    port = closed_port()
    obs = observe(tmp_path, http(f"http://127.0.0.1:{port}/"))["api"]
    assert obs.status is Status.CRITICAL
    assert obs.message == f"connection refused at 127.0.0.1:{port} — is the service running?"


@pytest.mark.parametrize(
    ("days", "status", "text"),
    [
        (200, Status.OK, "certificate valid"),
        (10, Status.WARNING, "TLS certificate expires in 10 day(s)"),
        (3, Status.CRITICAL, "TLS certificate expires in 3.0 day(s)"),
    ],
)
def test_tls_certificate_days_left(tmp_path: Path, days: int, status: Status, text: str):
    cert, key = make_cert(tmp_path, days)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with ServerThread(app(), ssl_context=context) as srv:
        trusted = observe(tmp_path, http(f"{srv.url}/health", ca_file=str(cert)))["api"]
        untrusted = observe(tmp_path, http(f"{srv.url}/health"))["api"]
        unverified = observe(tmp_path, http(f"{srv.url}/health", tls_verify=False))["api"]
    assert trusted.status is status and text in trusted.message, trusted.message
    assert trusted.metrics["cert_days_left"] == pytest.approx(days, abs=0.1)
    assert (
        untrusted.status is Status.CRITICAL
        and "certificate" in untrusted.message
        and "not trusted" in untrusted.message
    )
    assert unverified.metrics["cert_days_left"] == pytest.approx(days, abs=0.1)


def test_tcp(tmp_path: Path, server):
    ok = observe(tmp_path, {"checks": [{"name": "port", "kind": "tcp", "port": server.port}]})["port"]
    assert ok.status is Status.OK and ok.message.startswith("port open")
    port = closed_port()
    down = observe(tmp_path, {"checks": [{"name": "port", "kind": "tcp", "port": port}]})["port"]
    assert down.status is Status.CRITICAL
    assert down.message == f"connection refused at 127.0.0.1:{port} — is the service running?"
