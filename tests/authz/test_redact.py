"""proxy.redact: field paths, removal, non-JSON, and a property: nothing named survives."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rolegate.errors import ConfigError
from rolegate.proxy.redact import compile_redaction, parse_field_path

TECH = ["price", "lines[*].price", "hourly_rate", "data[*].lines[*].price", "[*].price"]


def test_parse_paths():
    assert parse_field_path("amount") == ("amount",)
    assert parse_field_path("lines[*].price") == ("lines", "[*]", "price")
    assert parse_field_path("data[*].lines[*].price") == ("data", "[*]", "lines", "[*]", "price")
    assert parse_field_path("[*].price") == ("[*]", "price")
    assert parse_field_path("m[*][*].x") == ("m", "[*]", "[*]", "x")


@pytest.mark.parametrize(
    "bad", ["", " a", "a.", ".a", "a..b", "[*]", "lines[*]", "a.[*].b", "a[0].b", "a[*]b", "a b", "a[*", "a]"]
)
def test_invalid_paths_are_config_errors(bad):
    with pytest.raises(ConfigError):
        compile_redaction([bad])


def test_removes_named_fields_only():
    r = compile_redaction(TECH + ["amount"])
    body = {
        "id": 7,
        "price": 10,
        "hourly_rate": 55.5,
        "amount": 1,
        "lines": [{"item": "valve", "price": 3}, {"item": "pipe"}, "note"],
        "data": [{"lines": [{"price": 1, "qty": 2}]}, 5],
        "customer": {"price": "kept: not a named path"},
    }
    out = json.loads(r.apply(json.dumps(body).encode()))
    assert out == {
        "id": 7,
        "lines": [{"item": "valve"}, {"item": "pipe"}, "note"],
        "data": [{"lines": [{"qty": 2}]}, 5],
        "customer": {"price": "kept: not a named path"},
    }


def test_top_level_array_and_unchanged_bytes():
    r = compile_redaction(TECH)
    assert json.loads(r.apply(b'[{"price": 1, "a": 2}, 3]')) == [{"a": 2}, 3]
    body = b'{ "nothing":  "to remove" }'
    assert r.apply(body) is body  # untouched formatting when nothing matched


def test_not_json_returns_none():
    r = compile_redaction(TECH)
    for body in (b"", b"<html>", b'{"price": 1', b"\xff\xfe", b"[" * 100000):
        assert r.apply(body) is None


def test_duplicate_keys_cannot_smuggle_a_value():
    r = compile_redaction(["price"])
    assert json.loads(r.apply(b'{"price": 1, "price": 2, "x": 0}')) == {"x": 0}


def test_parent_removed_whole_beats_deeper_path():
    for fields in (["lines", "lines[*].price"], ["lines[*].price", "lines"]):
        assert json.loads(compile_redaction(fields).apply(b'{"lines":[{"price":1}],"a":1}')) == {"a": 1}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["price", "lines", "data", "hourly_rate", "x"]), children, max_size=4)
    ),
    max_leaves=30,
)


def _named_survivor(node, steps) -> bool:
    if not steps:
        return True
    head, rest = steps[0], steps[1:]
    if head == "[*]":
        return isinstance(node, list) and any(_named_survivor(i, rest) for i in node)
    return isinstance(node, dict) and head in node and _named_survivor(node[head], rest)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_no_named_field_survives(doc):
    r = compile_redaction(TECH)
    out = r.apply(json.dumps(doc).encode())
    assert out is not None
    result = json.loads(out)
    for field in TECH:
        assert not _named_survivor(result, parse_field_path(field))
