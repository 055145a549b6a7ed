"""The linters are part of the suite: ruff on src/ and tests/ with the rules in pyproject.toml ([tool.ruff.lint]),
ruff's formatter (its layout, checked), mypy --strict on the modules [tool.mypy] lists.

An unused import, an undefined name, a bare ``except:`` or a loop variable a closure captures late fails here,
naming file and line. Both come with the ``lint`` extra (scripts/setup.sh installs it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str]:
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.exists() else shutil.which("ruff")
    assert found, "ruff is not installed: run scripts/setup.sh (pip install -e '.[lint]')"
    return [found]


def test_ruff_finds_nothing_in_src_and_tests():
    run = subprocess.run(
        [*_ruff(), "check", "--no-cache", "--output-format", "concise", "src", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"ruff check src tests:\n{run.stdout}{run.stderr}"


def test_ruff_format_leaves_src_and_tests_as_they_are():
    """The formatter's output is the code's layout: a change that is not formatted fails here, naming the files.
    (`.venv/bin/ruff format src tests` fixes it; .git-blame-ignore-revs hides the commit that formatted all.)"""
    run = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", "src", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"ruff format --check src tests:\n{run.stdout}{run.stderr}"


def test_ruff_format_would_fail_on_an_unformatted_file(tmp_path):
    """The check is live: the same configuration refuses a file laid out otherwise."""
    bad = tmp_path / "bad.py"
    bad.write_text("x = {  'a':1 }\n")
    run = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1 and "bad.py" in run.stdout, run.stdout + run.stderr


def test_ruff_would_fail_on_an_unused_import(tmp_path):
    """The rule set is live: the same configuration refuses a file with an unused import."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    run = subprocess.run(
        [*_ruff(), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1 and "F401" in run.stdout, run.stdout + run.stderr


def test_mypy_strict_passes_on_the_typed_modules():
    """mypy --strict on the packages listed in pyproject.toml ([tool.mypy] files: the request path, as issue #20 asks)."""
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert "No module named mypy" not in run.stderr, "mypy is not installed: run scripts/setup.sh"
    assert run.returncode == 0 and "Success" in run.stdout, f"mypy:\n{run.stdout}{run.stderr}"
