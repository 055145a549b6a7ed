"""Every cell of the seed's permission matrix, via decide, via the matrix builder and via the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rolegate.authz import Identity, compile_policy, decide
from rolegate.authz.matrix import build_matrix
from rolegate.cli import main as cli_main
from rolegate.config.sections.policy import Binding
from tests.authz.building_safety_matrix import (
    ALLOW,
    BUILDING,
    CLIENT,
    CLIENT_SCOPE,
    CONFIG,
    NONE,
    OTHER_BUILDING,
    REQUESTS,
    ROLE_GROUPS,
    ROLES,
    ROWS,
    SETTING,
    TASK,
    TASK_OBJECT,
    cells,
    scope_for,
)
from tests.authz.conftest import ROOT

NOW = 1_800_000_000.0
ALL_SETTINGS = sorted({row.setting for row in ROWS if row.setting})


def who(role: str) -> Identity:
    return Identity(f"{role}-person", ROLE_GROUPS[role])


def test_table_is_complete():
    assert len(ROWS) == 22 and len(cells()) == 88
    assert [r.permission for r in ROWS] == list(
        __import__("rolegate.config", fromlist=["x"]).load_config(ROOT / CONFIG).permissions
    )


@pytest.mark.parametrize("row,role,expected", cells(), ids=lambda v: getattr(v, "permission", v))
def test_cell_via_decide(building_safety, row, role, expected):
    p = row.permission
    scope = scope_for(p)
    obj = TASK_OBJECT if expected == TASK or p == "controls:perform" else None
    person = who(role)
    bare = compile_policy(building_safety)
    allowed = decide(bare, person, p, scope, obj, NOW).allowed
    if expected == ALLOW:
        assert allowed, decide(bare, person, p, scope, obj, NOW).reasons
        return
    assert not allowed, f"{role} must not have {p} without its condition"
    # With every other condition met (all settings on, added to the task), a ➖ stays ➖
    # and a conditional cell is met only by its own condition.
    everything_else = compile_policy(
        building_safety,
        enabled_settings={person.username: [s for s in ALL_SETTINGS if s != row.setting]},
        object_grants=[Binding(user=person.username, permission="controls:perform", object="task:7")],
    )
    assert not decide(everything_else, person, p, scope, obj, NOW).allowed
    if expected == NONE:
        return
    if expected == SETTING:
        met = compile_policy(building_safety, enabled_settings={person.username: [row.setting]})
    elif expected == TASK:
        met = compile_policy(
            building_safety, object_grants=[Binding(user=person.username, permission=p, object=TASK_OBJECT)]
        )
        assert not decide(met, person, p, None, "task:43", NOW).allowed  # only that task
    else:
        assert expected == CLIENT
        met = compile_policy(
            building_safety, extra_bindings=[Binding(user=person.username, role="client_admin", scope=CLIENT_SCOPE)]
        )
    decision = decide(met, person, p, scope, obj, NOW)
    assert decision.allowed, decision.reasons


def test_one_setting_per_seed_row_and_per_building(building_safety):
    """Rows 14-16 (view / add / add-delete-change documents) had one toggle: enabling "view" let a user
    delete. Now each "if enabled" row has its own setting, switched on per building."""
    conditional = [row for row in ROWS if SETTING in row.cells]
    assert len({row.setting for row in conditional}) == len(conditional) == 7
    assert set(building_safety.user_settings) == {row.setting for row in conditional}
    heidi = who("user")
    policy = compile_policy(building_safety, enabled_settings={heidi.username: [("documents_view", BUILDING)]})
    assert decide(policy, heidi, "documents:view", BUILDING, None, NOW).allowed
    assert not decide(policy, heidi, "documents:view", OTHER_BUILDING, None, NOW).allowed
    for other in ("documents:add", "documents:edit"):
        assert not decide(policy, heidi, other, BUILDING, None, NOW).allowed
    # The same setting without the role that lists it: nothing.
    nobody = Identity(heidi.username, ())
    assert not decide(policy, nobody, "documents:view", BUILDING, None, NOW).allowed


def test_responsible_is_per_building(building_safety):
    policy = compile_policy(building_safety)
    carol = who("responsible")
    for row in ROWS:
        if row.cells[2] == ALLOW and row.cells[3] != ALLOW:
            assert decide(policy, carol, row.permission, BUILDING, None, NOW).allowed
            assert not decide(policy, carol, row.permission, OTHER_BUILDING, None, NOW).allowed


def test_client_binding_reaches_buildings(building_safety):
    policy = compile_policy(
        building_safety, extra_bindings=[Binding(user="zoe", role="responsible", scope=CLIENT_SCOPE)]
    )
    zoe = Identity("zoe")
    for scope in (BUILDING, OTHER_BUILDING, CLIENT_SCOPE):
        assert decide(policy, zoe, "controls:activate", scope, None, NOW).allowed
    assert not decide(policy, zoe, "controls:activate", "building:elsewhere", None, NOW).allowed


def test_matrix_builder_matches_seed(building_safety):
    matrix = build_matrix(building_safety, roles=ROLES)
    for row, role, expected in cells():
        text = matrix.cell(row.permission, role).text
        if expected == ALLOW:
            assert text == "✅", (row.permission, role, text)
        elif expected == NONE:
            assert text == "➖", (row.permission, role, text)
        else:
            assert text == expected, (row.permission, role, text)  # the seed's words, cell for cell
            if expected == SETTING:
                assert matrix.cell(row.permission, role).detail == row.setting


def _cli(args: list[str], capsys) -> tuple[int, dict]:
    code = cli_main(["explain", "-c", str(ROOT / CONFIG), *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("row,role,expected", cells(), ids=lambda v: getattr(v, "permission", v))
def test_cell_via_explain_cli(row, role, expected, capsys):
    """The CLI (in-process) agrees on every cell, by permission and by request URL."""
    groups = ",".join(ROLE_GROUPS[role])
    p = row.permission
    args = ["--user", f"{role}-person", "--groups", groups, "--permission", p]
    scope = scope_for(p)
    if scope:
        args += ["--scope", scope]
    if p == "controls:perform":
        args += ["--object", TASK_OBJECT]
    code, out = _cli(args, capsys)
    assert out["permission"] == p and out["scope"] == scope and out["reasons"]
    assert out["allowed"] is (expected == ALLOW) and code == (0 if expected == ALLOW else 3)
    method, path = REQUESTS[p]
    code, out = _cli(["--user", f"{role}-person", "--groups", groups, "--method", method, "--url", path], capsys)
    assert out["permission"] == p and out["route"] is not None
    assert code == (0 if expected == ALLOW else 3), out


@pytest.mark.parametrize("row,role", [(ROWS[i], ROLES[i % 4]) for i in range(0, 22, 3)])
def test_sample_via_subprocess(row, role):
    expected = row.cells[ROLES.index(role)]
    method, path = REQUESTS[row.permission]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rolegate",
            "explain",
            "-c",
            str(ROOT / CONFIG),
            "--user",
            "u",
            "--groups",
            ",".join(ROLE_GROUPS[role]),
            "--method",
            method,
            "--url",
            path,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == (0 if expected == ALLOW else 3), proc.stderr
    out = json.loads(proc.stdout)
    assert out["allowed"] is (expected == ALLOW)
    assert out["permission"] == row.permission and isinstance(out["reasons"], list)
