"""Tests for rolegate.proxy.paths: canonical paths and hostile encodings."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rolegate.errors import AmbiguousPath
from rolegate.proxy.paths import MAX_PATH_LENGTH, normalize_path, split_segments


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/static/app.js", "/static/app.js"),
        ("/a/", "/a/"),
        ("/.rolegate/login", "/.rolegate/login"),
        ("/a/...", "/a/..."),
        ("/a/.b/..c", "/a/.b/..c"),
        # unreserved escapes are decoded, with either hex case
        ("/%41%62%7e%7E%2d%5f", "/Ab~~-_"),
        ("/a%2eb", "/a.b"),
        ("/a/%2E%2E%2E", "/a/..."),
        # reserved escapes stay encoded, upper-case
        ("/a%3bb", "/a%3Bb"),
        ("/a%3Fb%23c", "/a%3Fb%23c"),
        ("/a%20b", "/a%20b"),
        ("/%e2%82%ac", "/%E2%82%AC"),
        # double encoding is never decoded twice
        ("/a/%252e%252e/b", "/a/%252e%252e/b"),
        ("/a/%252F", "/a/%252F"),
        ("/a/%25", "/a/%25"),
        # raw characters that are not allowed in a path get encoded
        ("/a b", "/a%20b"),
        ('/"<>^`{|}[]', "/%22%3C%3E%5E%60%7B%7C%7D%5B%5D"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ("/caf\u00e9/%C3%A9", "/caf%C3%A9/%C3%A9"),
        # sub-delimiters, ':' and '@' are fine raw
        ("/a!$&'()*+,=:@", "/a!$&'()*+,=:@"),
        # duplicate slashes collapse; the collapsed form is what is forwarded
        ("//evil.com/x", "/evil.com/x"),
        ("/a//b///c", "/a/b/c"),
        ("/a//", "/a/"),
        ("//", "/"),
        # dot segments resolve (RFC 3986 5.2.4), keeping a trailing slash
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/.", "/"),
        ("/a/b/../../c/", "/c/"),
        ("/a//..", "/"),
    ],
)
def test_canonical_form(raw: str, canonical: str) -> None:
    assert normalize_path(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        # encoded dot segments
        "/a/%2e%2e/b",
        "/a/%2E%2E",
        "/a/.%2e/b",
        "/a/%2e./b",
        "/a/%2e",
        "/a/%2E/b",
        # encoded separators
        "/a/..%2f",
        "/a/..%2F..%2Fetc",
        "/%2F",
        "/a%2fb",
        "/a%5cb",
        "/a%5C..%5Cb",
        # literal backslash
        "\\",
        "/a\\b",
        "/a/..\\..\\etc",
        # control characters, raw and encoded (C0, DEL, C1)
        "/a%00",
        "/a\x00b",
        "/a%0d%0aSet-Cookie:x",
        "/a\r\nb",
        "/a\tb",
        "/a%7f",
        "/a\x7f",
        "/a%C2%85",
        "/a\x85",
        # invalid percent escapes
        "/%",
        "/a%",
        "/a%4",
        "/a%zz",
        "/a%g0",
        "/a%%41",
        # percent-encoded bytes that are not UTF-8, overlong forms included
        "/a/%C0%AE",
        "/a/%C0%AE%C0%AE/b",
        "/a/%c0%af",
        "/a/%e0%80%ae",
        "/a/%ff",
        "/a/%C3",
        "/a/%C3/b",
        "/a/%A9",
        "/a/%ED%A0%80",  # encoded UTF-16 surrogate
        "/a/%C3\u00e9",  # a raw character cannot complete an encoded sequence
        "/a\udcff",  # undecodable request byte (surrogateescape)
        # path parameters
        "/a;jsessionid=1",
        "/a/;/b",
        "/a;",
        # query or fragment markers cannot be part of a path
        "/a?b",
        "/a#b",
        # climbing above the root
        "/..",
        "/../x",
        "/a/../../x",
        "/./../x",
        # not a path
        "",
        "a",
        "a/b",
        "*",
        "http://evil.com/x",
        "%2F",
        # Unicode that folds (NFKC) to a separator or a dot segment upstream
        "/a/\uff0f/b",
        "/a/%EF%BC%8F",
        "/a/\uff3c",
        "/a/\u2024",
        "/a/\u2025",
        "/a/\uff0e\uff0e",
    ],
)
def test_hostile_paths_are_rejected(raw: str) -> None:
    with pytest.raises(AmbiguousPath):
        normalize_path(raw)


def test_rejection_is_a_400_with_a_safe_message() -> None:
    with pytest.raises(AmbiguousPath) as info:
        normalize_path("/a/%2e%2e/secret")
    assert info.value.status == 400
    assert "secret" not in info.value.public_message


def test_overlong_paths_are_rejected() -> None:
    ok = "/" + "a" * (MAX_PATH_LENGTH - 1)
    assert normalize_path(ok) == ok
    with pytest.raises(AmbiguousPath):
        normalize_path(ok + "a")
    with pytest.raises(AmbiguousPath):
        normalize_path("/a", max_length=1)
    # the limit also holds once raw characters are percent-encoded
    with pytest.raises(AmbiguousPath):
        normalize_path("/" + " " * 100, max_length=200)
    # and for the slow path
    with pytest.raises(AmbiguousPath):
        normalize_path("/%41" * 3000)


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("/", ()),
        ("/a", ("a",)),
        ("/a/b/", ("a", "b", "")),
        ("/a%20b/%C3%A9", ("a b", "\u00e9")),
        ("/a%3Bb", ("a;b",)),
        ("/a/%252e", ("a", "%2e")),
        ("/%25", ("%",)),
    ],
)
def test_split_segments(path: str, segments: tuple[str, ...]) -> None:
    assert split_segments(path) == segments


def test_fast_path_agrees_with_slow_path() -> None:
    # "/a/b" takes the regex fast path; "/a/%62" the slow one; both must agree.
    assert normalize_path("/a/%62") == normalize_path("/a/b") == "/a/b"
    assert normalize_path("/a/b/") == "/a/b/"


# --- properties ----------------------------------------------------------------

# Pieces that hit every rule: escapes (valid, invalid, double), dots, slashes,
# separators, controls, non-ASCII and a few plain characters.
_PIECES = st.sampled_from(
    [
        "/",
        "//",
        ".",
        "..",
        "a",
        "B",
        "z9",
        "-",
        "_",
        "~",
        "!",
        ":",
        "@",
        "+",
        ";",
        "\\",
        "?",
        "#",
        " ",
        '"',
        "{",
        "|",
        "\x00",
        "\x1f",
        "\x7f",
        "\x85",
        "\u00e9",
        "\u20ac",
        "\uff0f",
        "\u2024",
        "\ud800",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "%41",
        "%7e",
        "%25",
        "%252e",
        "%3b",
        "%3B",
        "%20",
        "%00",
        "%0a",
        "%7f",
        "%C3%A9",
        "%c3",
        "%a9",
        "%C0%AE",
        "%ff",
        "%E2%82%AC",
        "%ED%A0%80",
        "%C2%85",
        "%",
        "%4",
        "%zz",
        "%EF%BC%8F",
    ]
)
_RAW_PATHS = st.builds(
    lambda head, pieces: head + "".join(pieces),
    st.sampled_from(["/", "//", "", "/.", "/.."]),
    st.lists(_PIECES, max_size=16),
) | st.text(max_size=40).map(lambda s: "/" + s)


def _try(raw: str) -> str | None:
    try:
        return normalize_path(raw)
    except AmbiguousPath:
        return None


@settings(max_examples=3000)
@given(_RAW_PATHS)
@example("/a/%2e%2e/b")
@example("/a b/%252e/./..//c/")
def test_normalize_is_idempotent_and_raises_only_ambiguous_path(raw: str) -> None:
    # (c) holds because _try only catches AmbiguousPath: anything else fails the test.
    canonical = _try(raw)
    if canonical is None:
        return
    assert normalize_path(canonical) == canonical
    assert canonical.startswith("/")
    assert "//" not in canonical
    segs = canonical.split("/")[1:]
    assert "." not in segs and ".." not in segs
    assert ";" not in canonical and "\\" not in canonical
    assert canonical.isascii()


@settings(max_examples=3000)
@given(_RAW_PATHS)
def test_upstream_decoding_once_sees_the_same_segments(raw: str) -> None:
    canonical = _try(raw)
    if canonical is None:
        return
    segments = split_segments(canonical)
    # An upstream decodes the forwarded path once, then splits on "/".
    decoded_once = unquote(canonical, errors="strict")
    upstream = () if decoded_once == "/" else tuple(decoded_once[1:].split("/"))
    assert upstream == segments
    # No decoded segment is a dot segment or hides a separator.
    for s in segments:
        assert s not in (".", "..")
        assert "/" not in s and "\\" not in s
    # Re-encoding what the upstream saw and normalizing gives the same path
    # back, so the canonical form is unique for its segments.
    reencoded = "/" + "/".join(quote(s, safe="!$&'()*+,=:@") for s in segments)
    assert split_segments(normalize_path(reencoded)) == segments
    # Decoding once more is harmless unless the client double-encoded on
    # purpose ("%25"): only then can a second decode change the segments, and
    # that literal "%" is what the upstream is given.
    if "%25" not in canonical:
        again = _try(decoded_once)
        if again is not None:
            assert split_segments(again) == segments


@given(st.binary(max_size=30))
def test_arbitrary_request_bytes_only_raise_ambiguous_path(data: bytes) -> None:
    # aiohttp hands over undecodable bytes as surrogate escapes.
    _try("/" + data.decode("utf-8", "surrogateescape"))
