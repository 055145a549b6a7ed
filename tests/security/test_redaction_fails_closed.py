"""Issue 16, item 2: redaction works on the bytes it received and fails closed.

A real ``rolegate serve`` in front of a real HTTP server that answers hostile bodies byte for byte
(non-UTF-8 JSON, HTML, invalid or compressed JSON, bodies over the cap, streams), and in front of the
lab's example backend, which echoes the request's headers. A technician (no ``pricing:view``) must
never receive a price: the body is redacted, or refused with a 502 that carries a reference id and is
logged once with the reason — unless the route says ``on_unredactable: pass``. Finance (holds
``pricing:view``) gets every answer untouched.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rolegate.config import load_config
from rolegate.identity.principal import Principal
from rolegate.identity.stage import IdentityStage
from rolegate.proxy.redact import compile_redaction
from rolegate.store import open_store
from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab  # the lab's example backend is one of the upstreams

SECRET = "redaction-fails-closed-secret-" + "r" * 40
PRICES = ["price", "hourly_rate", "lines[*].price"]
PRICED = {
    "id": 1,
    "price": 480.0,
    "hourly_rate": 55,
    "note": "fire alarm",
    "lines": [{"item": "inspection", "price": 360.0}, {"item": "report", "price": 120.0}],
}
PRICED_JSON = json.dumps(PRICED).encode()
WITHOUT_PRICES = {"id": 1, "note": "fire alarm", "lines": [{"item": "inspection"}, {"item": "report"}]}
JSON = "Content-Type: application/json"

# name -> (status, extra header lines, body, framing: "length" | "chunked" | "close")
CASES: dict[str, tuple[int, list[str], bytes, str]] = {
    "ok": (
        200,
        [JSON, 'ETag: "sha1-of-the-priced-body"', "Digest: sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="],
        PRICED_JSON,
        "length",
    ),
    # A stored field holding a byte that is not UTF-8.
    "nonutf8": (200, [JSON], b'{"id":1,"price":480.0,"note":"caf\xff","lines":[{"item":"x","price":3}]}', "length"),
    # What an app writes when it echoes a request header holding \xff: a lone-surrogate escape.
    "escaped": (200, [JSON], b'{"id":1,"price":480.0,"header":"\\udcff"}', "length"),
    "html": (200, ["Content-Type: text/html; charset=utf-8"], b"<p>Price: 480.00 EUR</p>", "length"),
    "plain": (200, ["Content-Type: text/plain"], PRICED_JSON, "length"),
    "untyped": (200, [], PRICED_JSON, "length"),
    "invalid": (200, [JSON], b'{"id":1,"price":480.0,"lines":[', "length"),
    "gzip": (200, [JSON, "Content-Encoding: gzip"], gzip.compress(PRICED_JSON), "length"),
    "deep": (200, [JSON], b'{"price":480.0,"x":' + b"[" * 20000 + b"]" * 20000 + b"}", "length"),
    "bigint": (200, [JSON], b'{"price":480.0,"n":' + b"7" * 5000 + b"}", "length"),
    "sse": (200, ["Content-Type: text/event-stream"], b'data: {"price": 480.0}\n\n' * 3, "chunked"),
    "closed": (200, ["Content-Type: text/csv"], b"item,price\ninspection,360.0\n", "close"),
    "chunked": (200, [JSON], PRICED_JSON, "chunked"),
    "tiny": (200, [JSON], b'{"price":1,"a":2}', "length"),
    "empty204": (204, ['ETag: "e"'], b"", "length"),
    "notmodified": (304, ['ETag: "sha1-of-the-priced-body"', JSON, f"Content-Length: {len(PRICED_JSON)}"], b"", "none"),
}


class _Upstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Answer(socketserver.BaseRequestHandler):
    """One request in, the case named by the path's last segment out, byte for byte; then close."""

    def handle(self) -> None:
        sock = self.request
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 64 * 1024:
            chunk = sock.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, target = lines[0].split(b" ")[:2]
        length = next(
            (
                int(v)
                for k, _, v in (line.partition(b":") for line in lines[1:])
                if k.strip().lower() == b"content-length"
            ),
            0,
        )
        while len(body) < min(length, 1024 * 1024):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        status, headers, payload, framing = CASES[target.rsplit(b"/", 1)[-1].decode()]
        out = [f"HTTP/1.1 {status} X", *headers, "Connection: close"]
        if framing == "length":
            out.append(f"Content-Length: {len(payload)}")
        elif framing == "chunked":
            out.append("Transfer-Encoding: chunked")
        raw = "\r\n".join(out).encode("latin-1") + b"\r\n\r\n"
        if method != b"HEAD" and status not in (204, 304):
            if framing == "chunked":
                pieces = [payload[i : i + 16] for i in range(0, len(payload), 16)]
                raw += b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
            else:
                raw += payload
        sock.sendall(raw)


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    server = _Upstream(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _config(tmp: Path, upstream: str, lab: str, routes: list[dict]) -> dict:
    return {
        "server": {"listen": "127.0.0.1:0", "public_url": "http://127.0.0.1:8080", "workers": 1},
        "storage": {"url": f"sqlite:///{tmp}/rolegate.db"},
        "session": {"secret": SECRET},
        "permissions": ["orders:view", "pricing:view"],
        "roles": {
            "technician": {"permissions": ["orders:view"]},
            "finance": {"permissions": ["orders:view", "pricing:view"]},
        },
        "bindings": [{"group": "technicians", "role": "technician"}, {"group": "finance", "role": "finance"}],
        "upstreams": {
            "app": {"url": upstream, "connect_timeout": "2s", "timeout": "5s"},
            "lab": {"url": lab, "connect_timeout": "2s", "timeout": "5s"},
        },
        "routes": routes,
    }


def _redact(**extra: object) -> dict:
    return {"fields": PRICES, "unless": "pricing:view", **extra}


async def _sign_in(config_path: Path, username: str, groups: list[str]) -> str:
    """A Cookie header for a new session, created as the OIDC callback would (same Store as serve)."""
    config = load_config(str(config_path))
    store = await open_store(config.storage, base_dir=config_path.parent)
    stage = IdentityStage(config, base_dir=config_path.parent, store=store)
    try:
        await stage.open()
        principal = Principal(
            username=username, email=f"{username}@example.com", groups=frozenset(groups), subject=username
        )
        session_id, tag, _ = await stage.sessions.create(claims={}, principal=principal, tokens={}, issuer="test")
        name = config.session.cookie_name
        return f"{name}={stage.cookie_sealer.seal({'i': session_id, 'u': tag}, name=name, ttl=3600)}"
    finally:
        await stage.close()
        await store.close()


class Served:
    def __init__(self, proc: RolegateProcess, tech: str, finance: str) -> None:
        self.proc, self.tech, self.finance = proc, tech, finance

    def fetch(
        self, method: str, path: str, cookie: str | None, headers: dict[str, str | bytes] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.proc.port, timeout=15)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            conn.putheader("Accept", "application/json")
            if cookie is not None:
                conn.putheader("Cookie", cookie)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)  # bytes go out as they are (\xff included)
            body = b'{"note":"x"}' if method in ("POST", "PUT", "PATCH") else b""
            if body:
                conn.putheader("Content-Type", "application/json")
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def refusal(self, method: str, path: str) -> str:
        """Assert a 502 in rolegate's error shape, logged once with why; the reference id."""
        status, headers, body = self.fetch(method, path, self.tech)
        assert status == 502, (status, body[:300])
        assert b"480.0" not in body and b"price" not in body.lower()
        error = json.loads(body)
        assert error["error"] == "bad_gateway" and error["reference"] == headers["X-Rolegate-Reference"]
        ref = error["reference"]
        assert self.proc.wait_for_log(f"ref={ref}"), self.proc.log()
        lines = [line for line in self.proc.output if f"ref={ref}" in line]
        assert len(lines) == 1 and "redaction refused the response" in lines[0], lines
        return lines[0]


def _serve(tmp: Path, config: dict) -> tuple[RolegateProcess, str, str]:
    import asyncio

    proc = RolegateProcess(config, tmp)
    tech = asyncio.run(_sign_in(proc.config_path, "tom", ["technicians"]))
    finance = asyncio.run(_sign_in(proc.config_path, "erin", ["finance"]))
    proc.start()
    return proc, tech, finance


@pytest.fixture(scope="module")
def served(tmp_path_factory, hostile, lab_backend) -> Iterator[Served]:
    routes = [
        {"path": "/r/**", "permission": "orders:view", "upstream": "app", "redact": _redact()},
        {"path": "/small/**", "permission": "orders:view", "upstream": "app", "redact": _redact(max_bytes=64)},
        {"path": "/pub/**", "mode": "public", "upstream": "app", "redact": {"fields": PRICES}},
        {"path": "/workorders/{id}", "permission": "orders:view", "upstream": "lab", "redact": _redact()},
    ]
    tmp = tmp_path_factory.mktemp("redaction")
    proc, tech, finance = _serve(tmp, _config(tmp, hostile, lab_backend.url, routes))
    yield Served(proc, tech, finance)
    proc.stop()


@pytest.fixture(scope="module")
def served_pass(tmp_path_factory, hostile, lab_backend) -> Iterator[Served]:
    routes = [
        {
            "path": "/pass/**",
            "permission": "orders:view",
            "upstream": "app",
            "redact": _redact(max_bytes=64, on_unredactable="pass"),
        }
    ]
    tmp = tmp_path_factory.mktemp("redaction-pass")
    proc, tech, finance = _serve(tmp, _config(tmp, hostile, lab_backend.url, routes))
    yield Served(proc, tech, finance)
    proc.stop()


def _redacted(body: bytes) -> dict:
    """The body is valid UTF-8 JSON and holds no price."""
    doc = json.loads(body.decode("utf-8"))
    assert b"480.0" not in body and b'"price"' not in body and b"hourly_rate" not in body, body
    return doc


# -- the bytes: non-UTF-8 JSON is redacted, never relayed as it came --------------------------------------


def test_the_issue_reproduction_an_echoed_non_utf8_header(served):
    """``curl -H "Cookie: $BOB" -H $'X-Bad: \\xff' $B/workorders/1`` against the lab backend, which echoes it."""
    status, _, body = served.fetch("GET", "/workorders/1", served.tech, {"X-Bad": b"\xff"})
    assert status == 200, body[:300]
    doc = _redacted(body)
    assert doc["id"] == "1" and doc["description"] == "Annual fire alarm inspection"
    assert doc["headers"]["X-Bad"] == "\udcff"  # the app's own escape, passed on as that escape


def test_a_stored_non_utf8_byte_is_redacted_and_comes_back_escaped(served):
    status, _, body = served.fetch("GET", "/r/nonutf8", served.tech)
    assert status == 200, body[:300]
    assert _redacted(body) == {"id": 1, "note": "caf\udcff", "lines": [{"item": "x"}]}
    assert b"\\udcff" in body  # the stray byte, as an escape: the answer is valid UTF-8


def test_a_lone_surrogate_escape_is_redacted_and_kept_as_written(served):
    status, _, body = served.fetch("GET", "/r/escaped", served.tech)
    assert status == 200, body[:300]
    assert _redacted(body) == {"id": 1, "header": "\udcff"}
    assert body == b'{"id":1,"header":"\\udcff"}'


# -- what cannot be read is refused: 502 with a reference, one log line saying why ------------------------


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("html", "text/html; charset=utf-8 response is not JSON"),
        ("plain", "text/plain response is not JSON"),
        ("untyped", "an untyped response is not JSON"),
        ("invalid", "the body is not valid JSON"),
        ("gzip", "the body is compressed (gzip)"),
        ("deep", "nested deeper than the parser's limit"),
        ("bigint", "the body is not valid JSON"),
        ("sse", "text/event-stream response is not JSON"),
        ("closed", "text/csv response is not JSON"),
    ],
)
def test_an_unreadable_body_is_a_502_with_a_reference(served, case, why):
    line = served.refusal("GET", f"/r/{case}")
    assert why in line and "/r/**" in line, line


def test_a_body_over_the_cap_is_a_502(served):
    assert "exceeds redact.max_bytes (64)" in served.refusal("GET", "/small/ok")


def test_a_chunked_body_growing_past_the_cap_is_a_502(served):
    assert "grew past redact.max_bytes (64)" in served.refusal("GET", "/small/chunked")


def test_a_chunked_body_within_the_cap_is_redacted(served):
    status, _, body = served.fetch("GET", "/r/chunked", served.tech)
    assert status == 200 and _redacted(body) == WITHOUT_PRICES


# -- every method, every route mode ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_write_responses_are_redacted_too(served, method):
    status, _, body = served.fetch(method, "/r/ok", served.tech)
    assert status == 200 and _redacted(body) == WITHOUT_PRICES
    status, _, body = served.fetch(method, "/r/nonutf8", served.tech)
    assert status == 200 and _redacted(body)["note"] == "caf\udcff"
    served.refusal(method, "/r/html")


def test_a_public_route_that_redacts_redacts_for_everyone(served):
    status, _, body = served.fetch("GET", "/pub/ok", None)
    assert status == 200 and _redacted(body) == WITHOUT_PRICES
    status, _, body = served.fetch("GET", "/pub/html", None)
    assert status == 502 and b"480.0" not in body


# -- headers that describe the unredacted bytes ------------------------------------------------------------


def test_a_redacted_answer_carries_no_validator_of_the_priced_body(served):
    status, headers, body = served.fetch("GET", "/r/ok", served.tech)
    assert status == 200 and _redacted(body) == WITHOUT_PRICES
    assert headers["Content-Length"] == str(len(body))
    assert headers.get("ETag") is None and headers.get("Digest") is None


def test_head_204_and_304_do_not_reveal_the_unredacted_size(served):
    status, headers, _ = served.fetch("HEAD", "/r/ok", served.tech)
    assert status == 200 and headers.get("Content-Type") == "application/json"
    assert headers.get("Content-Length") in (None, "0") and headers.get("ETag") is None
    status, headers, _ = served.fetch("GET", "/r/notmodified", served.tech)
    assert status == 304 and headers.get("Content-Length") in (None, "0") and headers.get("ETag") is None
    status, headers, _ = served.fetch("GET", "/r/empty204", served.tech)
    assert status == 204 and headers.get("ETag") is None


# -- who may see the fields sees everything, untouched ---------------------------------------------------


def test_a_caller_holding_unless_gets_every_answer_untouched(served):
    for case in ("ok", "nonutf8", "html", "gzip", "invalid"):
        status, headers, body = served.fetch("GET", f"/r/{case}", served.finance)
        assert (status, body) == (200, CASES[case][2]), case
    status, headers, _ = served.fetch("HEAD", "/r/ok", served.finance)
    assert headers["Content-Length"] == str(len(PRICED_JSON)) and headers["ETag"] == '"sha1-of-the-priced-body"'


# -- on_unredactable: pass --------------------------------------------------------------------------------


def test_on_unredactable_pass_relays_what_cannot_be_read_and_still_redacts_json(served_pass):
    for case in ("html", "invalid", "ok", "chunked", "gzip"):  # ok: declared over the 64-byte cap
        status, _, body = served_pass.fetch("GET", f"/pass/{case}", served_pass.tech)
        assert (status, body) == (200, CASES[case][2]), case
    status, _, body = served_pass.fetch("GET", "/pass/tiny", served_pass.tech)
    assert (status, json.loads(body)) == (200, {"a": 2})
    assert served_pass.proc.wait_for_log("redaction skipped (on_unredactable: pass)")


def test_on_unredactable_is_validated(tmp_path, hostile):
    import subprocess
    import sys

    import yaml

    routes = [
        {"path": "/x", "permission": "orders:view", "upstream": "app", "redact": _redact(on_unredactable="sometimes")}
    ]
    path = tmp_path / "rolegate.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, hostile, hostile, routes)))
    done = subprocess.run(
        [sys.executable, "-m", "rolegate", "check", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "on_unredactable" in done.stdout + done.stderr, done.stdout + done.stderr


# -- the redactor on its own: bytes in, valid UTF-8 out, nothing named survives ----------------------------


def test_the_redactor_works_on_bytes_that_are_not_utf8():
    r = compile_redaction(PRICES)
    assert r.apply(b'{"price":1,"n":"caf\xc3\xa9\xff"}') == '{"n":"café\\udcff"}'.encode()
    # Nothing to remove, but the stray byte is never relayed as it came: a lenient decoder could read it
    # (with its neighbours) as something else than we did.
    assert r.apply(b'{"n":"\xc1\xa5"}') == b'{"n":"\\udcc1\\udca5"}'
    assert r.apply(b'{"price":1,"x":1e400}') is None  # inf cannot be written back as JSON
    assert r.apply(b'\xef\xbb\xbf{"price":1,"a":2}') == b'{"a":2}'


_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_BYTES = st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)  # what surrogateescape makes of a stray byte
_KEYS = st.sampled_from(["price", "hourly_rate", "lines", "x", "pr\u00efce"])


def _documents(chars: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    text = st.text(alphabet=st.one_of(st.sampled_from('aé€😀"\\/'), chars), max_size=6)
    return st.recursive(
        st.none() | st.booleans() | st.integers() | text,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_KEYS, kids, max_size=4),
        max_leaves=20,
    )


def _without(node: object, steps: tuple[str, ...]) -> None:
    """An independent remover: the expected document."""
    head, rest = steps[0], steps[1:]
    if head == "[*]":
        if isinstance(node, list):
            for item in node:
                _without(item, rest)
    elif isinstance(node, dict) and head in node:
        if rest:
            _without(node[head], rest)
        else:
            del node[head]


def _check(raw: bytes) -> None:
    import copy

    from rolegate.proxy.redact import parse_field_path

    r = compile_redaction(PRICES)
    out = r.apply(raw)
    assert out is not None
    result = json.loads(out.decode("utf-8"))  # strict: the answer is always valid UTF-8
    expected = copy.deepcopy(json.loads(raw.decode("utf-8", "surrogateescape")))
    for field in PRICES:
        _without(expected, parse_field_path(field))
    assert result == expected


@settings(max_examples=200, deadline=None)
@given(_documents(_SURROGATES))
def test_lone_surrogate_escapes_survive_redaction_exactly(doc):
    _check(json.dumps(doc).encode("ascii"))


@settings(max_examples=200, deadline=None)
@given(_documents(_BYTES))
def test_stray_bytes_survive_redaction_as_escapes(doc):
    _check(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape"))
