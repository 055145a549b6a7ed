"""Event builders: schema v1, canonical encoding, no secrets, no crash on odd input."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from rolegate.audit import KINDS, SCHEMA_VERSION, admin_change_event, decision_event, request_event
from rolegate.audit.events import MAX_TEXT, encode_body

from tests.audit.samples import one_of_each


def test_every_kind_has_a_builder_and_the_common_fields() -> None:
    events = one_of_each()
    assert {e.kind for e in events} == set(KINDS)
    for event in events:
        body = json.loads(event.encode())
        assert body["v"] == SCHEMA_VERSION
        assert len(body["id"]) == 16
        assert "user" in body
        assert round(event.ts, 6) == event.ts


def test_encoding_is_canonical_and_ascii() -> None:
    event = decision_event(decision="deny", user="Jörg", method="get", path="/a/ü")
    text = event.encode()
    assert text.isascii()
    assert text == encode_body(json.loads(text))
    assert json.loads(text)["method"] == "GET"


def test_only_allowed_reads_are_droppable() -> None:
    assert decision_event(decision="allow", user="a", method="GET", path="/").droppable
    assert decision_event(decision="allow", user="a", method="head", path="/").droppable
    assert not decision_event(decision="deny", user="a", method="GET", path="/").droppable
    assert not decision_event(decision="would-deny", user="a", method="GET", path="/").droppable
    assert not decision_event(decision="allow", user="a", method="POST", path="/").droppable
    assert not request_event(user="a", method="GET", path="/", status=200).droppable


def test_no_secrets_reach_the_body() -> None:
    event = request_event(user="a", method="POST", path="/api/x?access_token=SECRET1#frag", status=200)
    redeem = decision_event(decision="allow", user=None, method="GET", path="/.rolegate/pass/SECRET2/qr")
    change = admin_change_event(
        actor="root",
        target="oidc",
        action="update",
        before={"client_secret": "SECRET3", "nested": {"Authorization": "Bearer SECRET4"}},
        after={"cookie": "SECRET5", "password": "SECRET6", "name": "ok"},
    )
    text = event.encode() + redeem.encode() + change.encode()
    for secret in ("SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5", "SECRET6"):
        assert secret not in text
    assert json.loads(redeem.encode())["path"] == "/.rolegate/pass/[redacted]/qr"
    assert json.loads(change.encode())["after"]["name"] == "ok"


def test_oversized_and_odd_values_are_bounded() -> None:
    cyclic: dict = {}
    cyclic["self"] = cyclic
    event = admin_change_event(
        actor=object(),
        target="x" * 10_000,
        action=None,
        before=cyclic,
        after={"n": float("nan"), "s": {1, 2}, "b": b"\xff", "l": list(range(5000))},
    )
    body = json.loads(event.encode())
    assert len(body["target"]) <= MAX_TEXT + 1
    assert body["after"]["n"] is None
    assert len(body["after"]["l"]) == 1001


@settings(max_examples=200, deadline=None)
@given(
    user=st.one_of(st.none(), st.text()),
    method=st.text(),
    path=st.text(),
    latency=st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text()),
    roles=st.lists(st.text(), max_size=5),
    decision=st.text(),
)
def test_decision_builder_never_raises(user, method, path, latency, roles, decision) -> None:
    event = decision_event(decision=decision, user=user, method=method, path=path, latency_us=latency, roles=roles)
    text = event.encode()
    assert text.isascii()
    assert json.loads(text)["decision"] in ("allow", "deny", "would-deny")
