"""The text a Store keeps (store/codec.py): a FloatFree document through orjson reads back as the stdlib's text
would; every other value is the stdlib's, unchanged, NaN included."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from rolegate.directory.persist import _Rows
from rolegate.directory.model import DirectoryUser, NameSet
from rolegate.store.codec import FloatFree, dumps

STDLIB = json.JSONEncoder(separators=(",", ":"), sort_keys=True)

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # (no lone surrogates)
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(text, values, max_size=6))
def test_a_float_free_document_reads_back_as_the_stdlib_text_would(document) -> None:
    written = dumps(FloatFree(document))
    assert json.loads(written) == json.loads(STDLIB.encode(document)) == document


def test_what_orjson_refuses_is_written_by_the_stdlib() -> None:
    for document in ({"big": 2**70}, {"lone": "\udc80"}, {"keys": {1: "a", 2: "b"}}):
        assert dumps(FloatFree(document)) == STDLIB.encode(document)


def test_any_other_value_is_the_stdlib_text_nan_included() -> None:
    for value in ({"x": float("nan")}, {"b": "é", "a": [1.5, None]}, [1, "x"], "plain", 3):
        assert dumps(value) == STDLIB.encode(value)
    assert dumps({"x": float("nan")}) == '{"x":NaN}'  # never null: only a FloatFree document goes to orjson


def test_snapshot_user_rows_are_float_free_documents() -> None:
    rows = _Rows()
    user = DirectoryUser(
        id="u1",
        dn="uid=a,dc=x",
        username="a",
        email=None,
        name="Ä",
        disabled=False,
        groups=NameSet({"g1", "g2"}),
        attributes={"building": ("b1",)},
        direct_groups=("g1",),
        member_of_groups=frozenset(),
    )
    rows.add(user, [3, 1])
    document = rows.document(removed=["u9"])
    assert type(document) is FloatFree
    assert json.loads(dumps(document)) == json.loads(STDLIB.encode(dict(document)))
