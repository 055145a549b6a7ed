"""Every mutation in tests/mutations/*.yaml is caught by the tests it names (see gate.py).

Runs in the main suite and alone (``scripts/mutations.sh``). Budget: each run of a mutation's tests is
bounded by ROLEGATE_MUTATION_TIMEOUT (300 s, a timeout counts as caught); the tests run once clean (shared
between mutations that name the same tests) and once per mutation, stopping at the first failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutations import gate

MUTATIONS = gate.all_mutations()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gate.scratch_copy(tmp_path_factory.mktemp("mutant"))


@pytest.mark.slow
@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_mutation_is_caught(mutation: gate.Mutation, tree: Path) -> None:
    print(gate.judge(mutation, tree))


def test_every_mutation_applies_to_the_code_as_it_is(tmp_path: Path) -> None:
    """Fast check, also when the slow gate is deselected: each `find` still occurs exactly once."""
    for mutation in MUTATIONS:
        for edit in mutation.edits:
            text = (gate.ROOT / edit.file).read_text()
            assert text.count(edit.find) == 1, f"{mutation.name}: {edit.file} no longer holds the text to change"
        for test in mutation.tests:
            assert (gate.ROOT / test.split("::")[0]).is_file(), f"{mutation.name}: no such test file {test}"


def test_every_mutation_is_named_in_claims_md() -> None:
    """docs/claims.md maps each promise to its tests and mutation: a mutation missing there is a claim nobody
    can find."""
    claims = (gate.ROOT / "docs" / "claims.md").read_text()
    missing = [m.name for m in MUTATIONS if f"`{m.name}`" not in claims]
    assert not missing, f"add these mutations to docs/claims.md: {missing}"
