"""`alerts test` against a real SMTP server that refuses the login: a reason, and the password nowhere."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.helpers import run_cli
from tests.real.receivers import SMTPReceiver

TYPED = "Wrong-Smtp-Pass-8812"


def test_refused_login_reports_why_without_the_password(tmp_path: Path):
    receiver = SMTPReceiver().start()
    try:
        url = receiver.url().replace(receiver.password, TYPED)
        config = tmp_path / "c.yaml"
        config.write_text(
            f"checks:\n  - {{name: api, kind: tcp, port: 1}}\nalerts:\n  channels:\n    mail: '{url}'\n"
            f"store: {{path: '{tmp_path / 'state.db'}'}}\n"
        )
        result = run_cli("alerts", "test", "-vv", "-c", str(config))
    finally:
        receiver.stop()
    assert result.returncode == 1, result.stderr
    assert "mail (mailto://alerts:****@127.0.0.1" in result.stdout
    assert "FAILED: Connection error while submitting email" in result.stdout  # Apprise's reason, kept
    everything = result.stdout + result.stderr
    for form in (TYPED, base64.b64encode(TYPED.encode()).decode()):
        assert form not in everything
    assert not receiver.mails
