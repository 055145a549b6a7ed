"""``rolegate test -c CONFIG CASES.yaml [--junit FILE]``: policy cases for CI.

A case file lists who asks for what and what must happen::

    cases:
      - name: technicians never see invoices      # seed 000: "... but not to price lists or invoices"
        who: {user: bob, groups: [staff, technicians]}
        what: {method: GET, url: /invoices/1001}
        expect: deny
      - name: heidi adds documents at building a once carol switched it on
        who: {user: heidi, groups: [bs-users]}
        given: {settings: {heidi: {"building:a": [documents_add]}}}
        what: {permission: documents:add, scope: "building:a"}
        expect: allow

``who`` names a user with ``groups`` (standing in for the directory, as ``explain --groups`` does) or
without (then the groups of the synced directory in the Store, when there is one). ``what`` is a
request (``method`` + ``url``, decided as the proxy decides it: normalized path, matched route, mode)
or a ``permission`` with optional ``scope`` and ``object``. ``given`` adds state for that case only, as
the admin API would store it: ``bindings`` (role bindings and object grants), ``settings`` (user ->
scope or ``*`` -> names), ``members`` (scope -> the scope it lies in) and ``assignments`` (object -> the
users assigned to it). ``redacted: true|false`` checks, for an allowed request, whether the route's
redaction removes fields for this caller.

Cases run against the config plus the Store's state when one exists (what the proxy enforces now).
Prints one line per case and exits 0 when every case holds, 1 when any fails (each failure named, with
the reasons of the decision), 2 when the config or the case file is invalid. ``--junit FILE`` writes
JUnit XML (one testcase per case) for CI.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from rolegate.cli import EXIT_ERROR, EXIT_OK, add_config_argument, load_or_exit
from rolegate.cli.explain import explain_request
from rolegate.config.loader import parse_yaml, validation_problems
from rolegate.config.sections.policy import EVERYWHERE, NAME, PERMISSION, SCOPE, Binding
from rolegate.config.types import Section
from rolegate.errors import ConfigError
from rolegate.proxy.route_table import compile_routes
from rolegate.store import StoreUnavailable, open_store
from rolegate.store.sqlite import sqlite_path

EXIT_FAILED = 1


class Who(Section):
    user: str = Field(pattern=NAME.pattern)
    groups: tuple[str, ...] | None = None  # None: the synced directory's groups
    daypass: str | None = None


class What(Section):
    method: str | None = None
    url: str | None = None
    permission: str | None = None
    scope: str | None = None
    object: str | None = None

    @model_validator(mode="after")
    def _one_question(self) -> "What":
        if (self.url is None) == (self.permission is None):
            raise ValueError("ask either method + url (a request) or permission [+ scope] [+ object]")
        if self.url is not None and (self.scope or self.object):
            raise ValueError("scope and object go with permission; a request takes them from its route")
        if self.method is not None and self.url is None:
            raise ValueError("method goes with url")
        if self.permission is not None and not PERMISSION.match(self.permission):
            raise ValueError(f"{self.permission!r} is not a permission (resource:action)")
        for value in (self.scope, self.object):
            if value is not None and not SCOPE.match(value):
                raise ValueError(f"{value!r} must look like type:id, e.g. building:a")
        return self


class Given(Section):
    """State for one case, as the admin API would store it."""

    bindings: tuple[Binding, ...] = ()
    settings: dict[str, dict[str, tuple[str, ...]] | tuple[str, ...]] = Field(default_factory=dict)
    members: dict[str, str] = Field(default_factory=dict)
    # object -> the users an app assigned to it (roles' on_assigned), e.g. {"workorder:1": [bob]}
    assignments: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("assignments")
    @classmethod
    def _objects(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for obj in value:
            if not SCOPE.match(obj):
                raise ValueError(f"{obj!r}: assignments map an object (type:id) to the users assigned to it")
        return value

    @field_validator("members")
    @classmethod
    def _scopes(cls, value: dict[str, str]) -> dict[str, str]:
        for child, parent in value.items():
            if not (SCOPE.match(child) and SCOPE.match(parent)):
                raise ValueError(f"{child!r}: {parent!r}: members map a scope to its parent, both type:id")
        return value


class Case(Section):
    name: str = Field(min_length=1, max_length=300)
    who: Who
    what: What
    expect: Literal["allow", "deny"]
    given: Given | None = None
    redacted: bool | None = None

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())


class CaseFile(Section):
    cases: tuple[Case, ...]


@dataclass
class Outcome:
    case: Case
    got: str
    passed: bool
    detail: list[str] = field(default_factory=list)
    seconds: float = 0.0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "test",
        help="run policy cases (CI): exit 0 all hold, 1 any fails",
        description="Run policy cases against the config (and the Store's state when one "
        "exists); exit 0 when every case holds, 1 when any fails, 2 on an "
        "invalid config or case file.",
    )
    add_config_argument(parser)
    parser.add_argument("cases", metavar="CASES.yaml", help="the case file")
    parser.add_argument("--junit", metavar="FILE", help="also write JUnit XML to FILE")
    parser.set_defaults(run=run)


def load_cases(path: str) -> CaseFile:
    """Read and validate a case file; every problem as ``FILE:LINE: key.path: reason`` (ConfigError)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    data, source = parse_yaml(text, path)
    try:
        cases = CaseFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, source)) from None
    problems = [] if cases.cases else [f"{source.where(('cases',))}: no cases: a case file lists at least one"]
    for i, case in enumerate(cases.cases):
        if case.given is not None:
            for user in case.given.settings:
                if not NAME.match(user):
                    problems.append(f"{source.where(('cases', i, 'given', 'settings', user))}: not a user name")
    if problems:
        raise ConfigError(problems)
    return cases


def run(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    try:
        case_file = load_cases(args.cases)
    except ConfigError as exc:
        print(
            f"rolegate test: invalid case file ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_ERROR
    outcomes, notes = asyncio.run(run_cases(args.config, config, case_file.cases))
    for note in notes:
        print(f"note: {note}")
    width = max(len(str(len(outcomes))), 1)
    print(f"{'#':>{width}}  RESULT  EXPECT  GOT    CASE")
    for n, o in enumerate(outcomes, 1):
        print(f"{n:>{width}}  {'PASS' if o.passed else 'FAIL':<6}  {o.case.expect:<6}  {o.got:<5}  {o.case.name}")
    failed = [o for o in outcomes if not o.passed]
    for o in failed:
        print(f"\nFAILED: {o.case.name}")
        for line in o.detail:
            print(f"  {line}")
    print(f"\n{len(outcomes) - len(failed)} passed, {len(failed)} failed ({args.cases})")
    if args.junit:
        write_junit(args.junit, args.cases, outcomes)
    return EXIT_FAILED if failed else EXIT_OK


async def run_cases(config_path: str, config: Any, cases: tuple[Case, ...]) -> tuple[list[Outcome], list[str]]:
    """Decide every case; the policy is the config plus the Store's state, plus each case's ``given``."""
    from rolegate.admin.state import compile_state  # lazy: admin, authz (see rolegate.cli)
    from rolegate.authz import Identity
    from rolegate.authz.explain import explain

    notes: list[str] = []
    state, snapshot = await _stored_state(config_path, config, notes)
    table, _problems = compile_routes(config)
    base = compile_state(config, state)
    now = time.time()
    outcomes: list[Outcome] = []
    for i, case in enumerate(cases):
        started = time.perf_counter()
        policy = base if case.given is None else compile_state(config, _with_given(state, case.given, i))
        problems = [p for p in policy.problems if p not in base.problems] if case.given is not None else []
        who = case.who
        if who.groups is not None:
            identity = Identity(who.user, who.groups, daypass=who.daypass)
        else:
            person = snapshot.user(who.user) if snapshot is not None else None
            groups = sorted(person.groups) if person is not None else []
            identity = Identity(
                who.user, groups, daypass=who.daypass, disabled=bool(person.disabled) if person is not None else False
            )
        what = case.what
        if what.permission is not None:
            result = explain(policy, identity, what.permission, what.scope, what.object, now)
        else:
            result = explain_request(config, policy, identity, what.method or "GET", what.url or "/", now, table)
        got = "allow" if result.allowed else "deny"
        passed = got == case.expect and not problems  # a given that names nothing known is a broken case
        detail = [f"expected {case.expect}, got {got}: {result.outcome}"] if got != case.expect else []
        detail += [f"given: {p}" for p in problems]
        if case.redacted is not None and result.allowed:
            redacted = any("will be removed" in n for n in result.notes)
            if redacted != case.redacted:
                passed = False
                detail.append(
                    f"expected the response {'' if case.redacted else 'not '}to be redacted; it "
                    f"{'is' if redacted else 'is not'}"
                )
        if not passed:
            detail += [f"- {r}" for r in result.reasons] + [f"note: {n}" for n in result.notes]
        outcomes.append(Outcome(case, got, passed, detail, time.perf_counter() - started))
    return outcomes, notes


def _with_given(state: Any, given: Given, index: int) -> Any:
    """The stored state with one case's ``given`` added, as the admin API would have stored it."""
    # lazy: admin, authz (see rolegate.cli)
    from rolegate.admin.state import ASSIGNED, SCOPE_MEMBERS, USER_SETTINGS, BINDINGS
    from rolegate.authz.stored import switches_of

    for n, binding in enumerate(given.bindings):
        state = state.with_doc(BINDINGS, f"given-{index}-{n}", binding.model_dump(mode="json", exclude_none=True))
    for user, by_scope in given.settings.items():
        if isinstance(by_scope, tuple):  # a plain list: everywhere
            by_scope = {EVERYWHERE: by_scope}
        old = state.settings.get(user)
        on = [s.to_json() for s in switches_of(old.value if old else None)]
        on += [
            {"setting": name, "scope": None if scope == EVERYWHERE else scope, "by": "rolegate test"}
            for scope, names in by_scope.items()
            for name in names
        ]
        state = state.with_doc(USER_SETTINGS, user, {"on": on})
    for child, parent in given.members.items():
        state = state.with_doc(SCOPE_MEMBERS, child, {"parent": parent})
    for obj, users in given.assignments.items():
        state = state.with_doc(ASSIGNED, obj, {"users": [{"user": u, "by": "rolegate test"} for u in users]})
    return state


async def _stored_state(config_path: str, config: Any, notes: list[str]) -> tuple[Any, Any]:
    """The admin API's stored state and the directory snapshot, when a Store exists for this config."""
    from rolegate.admin.state import DynamicState, load_state  # lazy: admin (see rolegate.cli)

    base_dir = Path(config_path).resolve().parent
    if config.storage.url.startswith("sqlite:"):
        db = sqlite_path(config.storage.url)
        if not (db if db.is_absolute() else base_dir / db).exists():
            notes.append("no store exists for this config: cases run against the config file only")
            return DynamicState(), None
    try:
        store = await open_store(config.storage, base_dir=base_dir)
    except (StoreUnavailable, OSError, ValueError) as exc:
        notes.append(f"the store could not be opened ({exc}): cases run against the config file only")
        return DynamicState(), None
    try:
        state = await load_state(store)
        snapshot = None
        if config.directory is not None:
            from rolegate.directory import load_snapshot  # lazy: directory, ldap3 (see rolegate.cli)

            snapshot = await load_snapshot(store)
        return state, snapshot
    except StoreUnavailable as exc:
        notes.append(f"the store is unavailable ({exc}): cases run against the config file only")
        return DynamicState(), None
    finally:
        await store.close()


def write_junit(path: str, suite: str, outcomes: list[Outcome]) -> None:
    """JUnit XML: one ``testsuite`` named after the case file, one ``testcase`` per case."""
    failures = sum(not o.passed for o in outcomes)
    root = ET.Element("testsuites", tests=str(len(outcomes)), failures=str(failures))
    element = ET.SubElement(
        root,
        "testsuite",
        name=Path(suite).name,
        tests=str(len(outcomes)),
        failures=str(failures),
        errors="0",
        time=f"{sum(o.seconds for o in outcomes):.6f}",
    )
    for o in outcomes:
        case = ET.SubElement(element, "testcase", classname=Path(suite).stem, name=o.case.name, time=f"{o.seconds:.6f}")
        if not o.passed:
            failure = ET.SubElement(case, "failure", message=o.detail[0] if o.detail else "failed", type="policy")
            failure.text = "\n".join(o.detail)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    try:
        tree.write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        print(f"rolegate test: cannot write {path}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
