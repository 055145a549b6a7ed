"""The optional ``access_requests`` section: absent is off, every problem names file, line and key."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from rolegate.config import load_config_text
from rolegate.errors import ConfigError

BASE = """\
server:
  listen: 127.0.0.1:0
  public_url: http://127.0.0.1:8080
scopes: {building: {}}
permissions: [documents:add]
upstreams:
  app: {url: "http://127.0.0.1:8081"}
routes:
  - {path: "/buildings/{b}/documents", permission: documents:add, scope: "building:{b}", upstream: app}
"""

GOOD = (
    BASE
    + """\
access_requests:
  max_duration: 4h
  expire_after: 2d
  rate: 3/10m
  labels: {documents:add: Add documents, building: "Building {id}", building:a: the A tower}
  notify:
    webhook: {url: "https://chat.example.com/hooks/rolegate", secret: "${HOOK_SECRET}", attempts: 3}
    email: {host: smtp.example.com, port: 465, security: tls, from: rolegate@example.com,
            username: rolegate, password: "${SMTP_PASSWORD}"}
"""
)

BAD = (
    BASE
    + """\
access_requests:
  max_duration: 60d
  expire_after: 1s
  rate: often
  labels:
    nothing:here: Nothing
    documents:add: "Add {what}"
    building: "Building {name}"
    building:a: ""
  notify:
    webhook: {url: "http://chat.example.com/hook", secret: short, attempts: 0}
    email: {host: smtp.example.com, security: none, from: nobody, username: rolegate}
    sms: {to: "+31"}
"""
)


def problems_of(text: str, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, file="c.yaml", **kw)
    return info.value.problems


def test_absent_is_off() -> None:
    assert load_config_text(BASE, file="c.yaml").access_requests is None


def test_a_good_section_loads() -> None:
    config = load_config_text(GOOD, file="c.yaml", env={"HOOK_SECRET": "h" * 40, "SMTP_PASSWORD": "pw"})
    section = config.access_requests
    assert section.max_duration == timedelta(hours=4) and section.rate_limit == (3, 600.0)
    assert section.notify.webhook.attempts == 3 and section.notify.email.sender == "rolegate@example.com"
    assert section.notify.webhook.secret.get_secret_value() == "h" * 40


def test_every_problem_names_its_line() -> None:
    found = problems_of(BAD)
    expected = [
        "c.yaml:11: access_requests.max_duration: max_duration must be between 1m and 31d",
        "c.yaml:12: access_requests.expire_after: expire_after must be between 5m and 90d",
        "c.yaml:13: access_requests.rate: 'often' is not a rate",
        "c.yaml:20: access_requests.notify.webhook.url: use https",
        "c.yaml:20: access_requests.notify.webhook.secret: the webhook secret must be at least 32 characters",
        "c.yaml:20: access_requests.notify.webhook.attempts:",
        "c.yaml:21: access_requests.notify.email.from: 'nobody' is not an e-mail address",
        "c.yaml:22: access_requests.notify.sms: unknown key",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)
    assert len(found) == len(expected), found


def test_labels_and_mail_are_cross_checked() -> None:
    text = (
        BAD.replace("  max_duration: 60d\n  expire_after: 1s\n  rate: often\n", "")
        .replace(
            '{url: "http://chat.example.com/hook", secret: short, attempts: 0}',
            '{url: "http://127.0.0.1:9/hook", secret: "' + "s" * 32 + '"}',
        )
        .replace("from: nobody", "from: rolegate@example.com")
        .replace('    sms: {to: "+31"}\n', "")
    )
    found = problems_of(text)
    assert found == [
        "c.yaml:12: access_requests.labels.nothing:here: 'nothing:here' is no declared permission, scope type or "
        "scope (type:id) of a declared type",
        "c.yaml:13: access_requests.labels.documents:add: only a scope type's label may hold a placeholder, and only "
        '{id} (e.g. building: "Building {id}")',
        "c.yaml:14: access_requests.labels.building: only a scope type's label may hold a placeholder, and only {id} "
        '(e.g. building: "Building {id}")',
        "c.yaml:15: access_requests.labels.building:a: a label is one line of 1 to 120 characters",
        "c.yaml:18: access_requests.notify.email.host: security: none sends mail (and a password) in clear: only to a "
        "relay on 127.0.0.1 / ::1 / localhost; use starttls or tls",
        "c.yaml:18: access_requests.notify.email.username: give both username and password, or neither",
    ], found


def test_rolegate_check_exits_2_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = subprocess.run(
        [sys.executable, "-m", "rolegate", "check", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"{path}:13: access_requests.rate:" in result.stderr + result.stdout
