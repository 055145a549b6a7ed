"""``rolegate test``: the shipped case files hold every seed promise; a flipped case fails, named, non-zero."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

from rolegate.cli import main as cli_main
from tests.authz.conftest import ROOT

EXAMPLES = ROOT / "config" / "examples"
SHIPPED = [("building-safety.yaml", "building-safety.tests.yaml"), ("field-service.yaml", "field-service.tests.yaml")]


@pytest.mark.parametrize("config,cases", SHIPPED)
def test_the_shipped_case_files_pass(config, cases, tmp_path):
    junit = tmp_path / "out.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rolegate",
            "test",
            "-c",
            str(EXAMPLES / config),
            str(EXAMPLES / cases),
            "--junit",
            str(junit),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and int(suite.get("tests")) >= 30
    assert suite.get("name") == cases


def test_every_seed_row_and_cell_is_a_case():
    """building-safety.tests.yaml: each of the 22 rows is quoted and each of its 88 cells is asked."""
    text = (EXAMPLES / "building-safety.tests.yaml").read_text()
    cases = yaml.safe_load(text)["cases"]
    from tests.authz.building_safety_matrix import ROWS

    for row in ROWS:
        assert f"  # | {row.area} |" in text, row.area
        asked = [c for c in cases if c["name"].split(": ", 1)[-1].startswith(row.area)]
        assert len({c["who"]["user"] for c in asked}) == 4, row.area


def _write(tmp_path, cases: list[dict]) -> str:
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"cases": cases}, sort_keys=False))
    return str(path)


def test_a_flipped_case_fails_by_name_with_its_reasons(tmp_path, capsys):
    cases = yaml.safe_load((EXAMPLES / "field-service.tests.yaml").read_text())["cases"]
    flipped = next(c for c in cases if c["name"] == "Technician: no invoices")
    flipped["expect"] = "allow"
    junit = tmp_path / "junit.xml"
    code = cli_main(
        ["test", "-c", str(EXAMPLES / "field-service.yaml"), _write(tmp_path, cases), "--junit", str(junit)]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL    allow   deny   Technician: no invoices" in out
    assert "FAILED: Technician: no invoices" in out and "denies invoices:view" in out, out
    assert f"{len(cases) - 1} passed, 1 failed" in out
    failed = [tc for tc in ET.parse(junit).getroot().iter("testcase") if tc.find("failure") is not None]
    assert [tc.get("name") for tc in failed] == ["Technician: no invoices"]
    assert "expected allow, got deny" in failed[0].find("failure").get("message")


def test_redaction_is_checked_too(tmp_path, capsys):
    case = {
        "name": "bob sees prices",
        "who": {"user": "bob", "groups": ["staff", "technicians"]},
        "given": {"members": {"workorder:1": "customer:c100"}, "assignments": {"workorder:1": ["bob"]}},
        "what": {"method": "GET", "url": "/workorders/1"},
        "expect": "allow",
        "redacted": False,
    }
    assert cli_main(["test", "-c", str(EXAMPLES / "field-service.yaml"), _write(tmp_path, [case])]) == 1
    assert "expected the response not to be redacted; it is" in capsys.readouterr().out


def test_a_broken_case_file_is_an_error_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("cases:\n  - name: x\n    who: {user: bob}\n    what: {method: GET}\n    expect: maybe\n")
    assert cli_main(["test", "-c", str(EXAMPLES / "field-service.yaml"), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rolegate test: invalid case file (2 problems):"), err
    assert f"{path}:4: cases[0].what: ask either method + url (a request) or permission" in err, err
    assert f"{path}:5: cases[0].expect" in err
    path.write_text("cases: []\n")
    assert cli_main(["test", "-c", str(EXAMPLES / "field-service.yaml"), str(path)]) == 2
    assert "no cases" in capsys.readouterr().err


def test_a_given_that_names_nothing_known_fails_the_case(tmp_path, capsys):
    case = {
        "name": "typo in the setting",
        "who": {"user": "heidi", "groups": ["bs-users"]},
        "given": {"settings": {"heidi": ["documents_ad"]}},
        "what": {"permission": "documents:view", "scope": "building:a"},
        "expect": "deny",
    }
    assert cli_main(["test", "-c", str(EXAMPLES / "building-safety.yaml"), _write(tmp_path, [case])]) == 1
    assert "given: " in (out := capsys.readouterr().out) and "'documents_ad'" in out, out


def test_cases_see_what_the_store_holds(tmp_path, capsys):
    """Against the config and the Store's state (what the proxy enforces now), with directory-less groups."""
    from rolegate.config import load_config
    from rolegate.store import open_store

    config_path = tmp_path / "rolegate.yaml"
    doc = yaml.safe_load((EXAMPLES / "building-safety.yaml").read_text())
    doc["storage"] = {"url": f"sqlite:///{tmp_path}/rolegate.db"}
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    config = load_config(config_path)

    async def store_binding() -> None:
        store = await open_store(config.storage, base_dir=tmp_path)
        try:
            await store.put(
                "bindings", "b1", {"user": "zoe", "role": "risk_assessor", "scope": "building:b"}, expected_version=0
            )
            await store.put(
                "user_settings",
                "zoe",
                {
                    "on": [
                        {"setting": "vacancy", "scope": "building:b", "by": "alice", "at": "2026-01-01T00:00:00+00:00"}
                    ]
                },
                expected_version=0,
            )
        finally:
            await store.close()

    asyncio.run(store_binding())
    cases = [
        {
            "name": "zoe changes risk assessments at b",
            "who": {"user": "zoe", "groups": []},
            "what": {"method": "PUT", "url": "/buildings/b/risk-assessment"},
            "expect": "allow",
        },
        {
            "name": "zoe manages vacancy at b (stored setting)",
            "who": {"user": "zoe", "groups": []},
            "what": {"method": "PUT", "url": "/buildings/b/rooms/r1/vacancy"},
            "expect": "allow",
        },
        {
            "name": "not at a",
            "who": {"user": "zoe", "groups": []},
            "what": {"method": "PUT", "url": "/buildings/a/risk-assessment"},
            "expect": "deny",
        },
    ]
    assert cli_main(["test", "-c", str(config_path), _write(tmp_path, cases)]) == 0, capsys.readouterr().out
