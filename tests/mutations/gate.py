"""The mutation gate: each promise broken on purpose must turn its tests red.

A mutation is a YAML file beside this module::

    claim: a write is committed to the audit trail before it is forwarded   # the promise, as docs/claims.md says it
    edits:                                  # exact text replacements; each `find` must occur exactly once
      - file: src/rolegate/server/pipeline.py
        find: |
          ...
        replace: |
          ...
    tests:                                  # pytest node ids that must fail once the edits are made
      - tests/security/test_audit_before_forward.py

``apply`` makes the edits in a scratch copy of the working tree and ``run`` runs the named tests there, with
that copy's ``src`` first on PYTHONPATH (the subprocesses the tests start inherit it). A mutation is caught
when pytest reports failures (exit code 1). Anything else is the gate's own failure, named: a `find` that no
longer matches (the code moved: update the mutation), a test id that does not exist, tests that passed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# One mutation's tests may take this long; a mutation that makes a test hang is caught by the timeout too.
TIMEOUT = float(os.environ.get("ROLEGATE_MUTATION_TIMEOUT", "300"))


class GateError(Exception):
    """The mutation could not be judged: it no longer applies, or names tests that do not exist."""


@dataclass(frozen=True)
class Edit:
    file: str
    find: str
    replace: str


@dataclass(frozen=True)
class Mutation:
    name: str
    claim: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


def load(path: Path) -> Mutation:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or set(doc) != {"claim", "edits", "tests"}:
        raise GateError(f"{path.name}: needs exactly the keys claim, edits, tests")
    edits = tuple(Edit(e["file"], e["find"], e["replace"]) for e in doc["edits"])
    if not edits or not doc["tests"]:
        raise GateError(f"{path.name}: no edits or no tests")
    return Mutation(path.stem, str(doc["claim"]).strip(), edits, tuple(doc["tests"]))


def all_mutations() -> list[Mutation]:
    return [load(p) for p in sorted(HERE.glob("*.yaml"))]


def scratch_copy(dest: Path) -> Path:
    """The working tree's tracked and untracked (not ignored) files, copied; the lab IdP's node_modules linked."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_file():
            continue  # deleted in the work tree but still in the index
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    modules = ROOT / "deploy" / "lab" / "idp" / "node_modules"
    if modules.is_dir():
        (dest / "deploy" / "lab" / "idp" / "node_modules").symlink_to(modules)
    return dest


def apply(mutation: Mutation, tree: Path) -> None:
    """Make the mutation's edits in ``tree`` (a scratch copy made by ``scratch_copy``)."""
    for edit in mutation.edits:
        path = tree / edit.file
        text = path.read_text()
        count = text.count(edit.find)
        if count != 1:
            raise GateError(
                f"{mutation.name}: the text to change occurs {count} times in {edit.file} "
                f"(expected once): the code moved, update tests/mutations/{mutation.name}.yaml"
            )
        path.write_text(text.replace(edit.find, edit.replace))


def restore(mutation: Mutation, tree: Path) -> None:
    for edit in mutation.edits:
        shutil.copy2(ROOT / edit.file, tree / edit.file)


def run(mutation: Mutation, tree: Path) -> tuple[int, str]:
    """Run the mutation's tests in ``tree``; (pytest's exit code, its output's tail)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", *mutation.tests]
    try:
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return -1, f"timed out after {TIMEOUT:.0f}s (counts as caught: the promise broke the tests)\n{out[-2000:]}"
    return done.returncode, (done.stdout + done.stderr)[-4000:]


_clean: dict[tuple[str, ...], tuple[int, str]] = {}


def judge(mutation: Mutation, tree: Path) -> str:
    """Run the tests on the unmutated copy (they must pass: a failure there would count any mutation as
    caught), then apply, run, restore. Returns a one-line verdict; raises AssertionError when the mutation
    survived, GateError when it cannot be judged."""
    if mutation.tests not in _clean:  # several mutations often name the same tests: run them clean once
        _clean[mutation.tests] = run(Mutation("unmutated", "", (), mutation.tests), tree)
    code, output = _clean[mutation.tests]
    if code != 0:
        raise GateError(
            f"{mutation.name}: its tests fail on the unmutated code (exit {code}), so a failure "
            f"with the mutation would prove nothing\n{output}"
        )
    apply(mutation, tree)
    try:
        code, output = run(mutation, tree)
    finally:
        restore(mutation, tree)
    if code in (1, -1):
        return f"caught: {mutation.name} ({mutation.claim})"
    if code == 0:
        raise AssertionError(
            f"SURVIVED: {mutation.name}: the tests passed with the promise broken ({mutation.claim})\n{output}"
        )
    raise GateError(
        f"{mutation.name}: pytest exited {code} (not a test failure: a missing test id or a "
        f"collection error?)\n{output}"
    )


def write(name: str, claim: str, edits: list[tuple[str, str, str]], tests: list[str]) -> Path:
    """Author a mutation file from Python strings (YAML block indentation is easy to get wrong by hand):
    ``write("x", "the promise", [(file, find, replace)], ["tests/..."])``. Checks that each edit applies."""
    for file, find, _ in edits:
        if (ROOT / file).read_text().count(find) != 1:
            raise GateError(f"{name}: the text to change does not occur exactly once in {file}")

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(
        str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None)
    )
    doc = {"claim": claim, "edits": [{"file": f, "find": a, "replace": b} for f, a, b in edits], "tests": tests}
    path = HERE / f"{name}.yaml"
    path.write_text(yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=200))
    return path
