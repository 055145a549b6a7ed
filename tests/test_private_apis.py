"""The private internals of aiohttp and prometheus-client that rolegate relies on, pinned by name.

pyproject.toml bounds both to the minor versions tested (aiohttp <3.15, prometheus-client <0.27). Raising a
bound means running this file first: an upgrade whose internals moved fails here, naming what moved, not in
production. Each test names its user:

- proxy/upstream_pool.py: the upstream connection is an aiohttp ``BaseProtocol`` that feeds aiohttp's
  response parser (``aiohttp._http_parser``, llhttp) directly.
- server/connections.py: ``RequestHandler`` / ``web.Server`` / ``web.AppRunner`` subclassed for the header,
  body and connection-count limits.
- server/metric_files.py: prometheus-client's ``MmapedDict`` replaced by one that reserves its blocks.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import struct
from importlib import metadata

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler

from rolegate.proxy import upstream_pool
from rolegate.server import connections, metric_files

VERSIONS = f"aiohttp {aiohttp.__version__}, prometheus-client {metadata.version('prometheus-client')}"


def moved(what: str, user: str) -> str:
    return f"{VERSIONS}: {what} moved; {user} relies on it (see tests/test_private_apis.py)"


class _Transport(asyncio.Transport):
    """Just enough transport for a protocol under test: records writes, never blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default=None):
        return default


# -- proxy/upstream_pool.py ------------------------------------------------------------------------------


def test_the_response_parser_is_the_c_one_and_takes_the_arguments_the_pool_passes():
    user = "proxy/upstream_pool.py (UpstreamConnection.begin, data_received)"
    try:
        from aiohttp._http_parser import HttpResponseParser
    except ImportError:  # pragma: no cover
        pytest.fail(moved("aiohttp._http_parser.HttpResponseParser (the llhttp parser)", user))
    assert upstream_pool._ResponseParser is HttpResponseParser, moved("the C parser import", user)
    from aiohttp.http_parser import HttpResponseParserPy  # the pure-Python fallback the module names

    for parser_class in (HttpResponseParser, HttpResponseParserPy):
        _feeds_a_response(parser_class, user)


def _feeds_a_response(parser_class, user: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        protocol = BaseProtocol(loop)
        try:
            parser = parser_class(
                protocol,
                loop,
                upstream_pool.READ_LIMIT,
                max_line_size=upstream_pool.MAX_LINE_SIZE,
                max_headers=upstream_pool.MAX_HEADERS,
                max_field_size=upstream_pool.MAX_FIELD_SIZE,
                response_with_body=True,
                read_until_eof=True,
                auto_decompress=False,
            )
        except TypeError as exc:
            pytest.fail(moved(f"{parser_class.__name__}'s constructor ({exc})", user))
        protocol._parser = parser
        result = parser.feed_data(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhel"
        )
        assert isinstance(result, tuple) and len(result) == 3, moved("feed_data -> (messages, upgraded, tail)", user)
        messages, upgraded, _tail = result
        assert [m.code for m, _ in messages] == [103, 200] and upgraded is False
        message, payload = messages[-1]
        assert message.should_close is True and message.headers["Content-Length"] == "5"
        assert isinstance(payload, StreamReader) and not payload.is_eof() and payload.exception() is None
        parser.feed_data(b"lo")
        assert payload.is_eof(), moved("the payload's end", user)
        assert messages[0][1] is EMPTY_PAYLOAD or messages[0][1].is_eof()
        parser.feed_eof()  # connection_lost completes close-delimited bodies with it
        with pytest.raises(HttpProcessingError) as bad:
            parser_class(
                protocol,
                loop,
                2**16,
                max_line_size=100,
                max_headers=10,
                max_field_size=100,
                response_with_body=True,
                read_until_eof=True,
                auto_decompress=False,
            ).feed_data(b"HTTP/1.1 abc OK\r\n\r\n")
        assert isinstance(bad.value.message, str), moved("HttpProcessingError.message", user)
    finally:
        loop.close()


def test_base_protocol_keeps_the_fields_the_upstream_connection_reads():
    user = "proxy/upstream_pool.py (UpstreamConnection: drain, finish, _on_timer)"
    slots = set(BaseProtocol.__slots__)
    for name in ("_loop", "_paused", "_parser", "_drain_waiter", "_reading_paused", "transport"):
        assert name in slots, moved(f"BaseProtocol.{name}", user)
    assert "resume_parser" in inspect.signature(BaseProtocol.resume_reading).parameters, moved(
        "BaseProtocol.resume_reading(resume_parser=...)", user
    )
    loop = asyncio.new_event_loop()
    try:
        protocol = BaseProtocol(loop)
        transport = _Transport()
        protocol.connection_made(transport)
        assert protocol.transport is transport and protocol._loop is loop and protocol._parser is None
        # Writing flow control: the pool parks a Future in _drain_waiter while _paused; resume_writing wakes it.
        protocol.pause_writing()
        assert protocol._paused is True, moved("BaseProtocol._paused (set by pause_writing)", user)
        waiter = loop.create_future()
        protocol._drain_waiter = waiter
        protocol.resume_writing()
        assert waiter.done() and protocol._drain_waiter is None, moved("resume_writing waking _drain_waiter", user)
        # Reading flow control: the pool resumes a paused connection without re-feeding the parser.
        protocol._reading_paused = True
        protocol.resume_reading(resume_parser=False)
        assert protocol._reading_paused is False, moved("BaseProtocol._reading_paused", user)
        # connection_lost forgets the transport and wakes a paused writer.
        protocol.pause_writing()
        waiter = loop.create_future()
        protocol._drain_waiter = waiter
        protocol.connection_lost(None)
        assert protocol.transport is None and waiter.done(), moved("connection_lost waking the writer", user)
    finally:
        loop.close()


# -- server/connections.py -----------------------------------------------------------------------------


async def test_request_handler_counts_and_queues_request_heads_as_the_guard_reads_them():
    user = "server/connections.py (_GuardedHandler.data_received, _GuardedServer)"
    for name in ("_request_count", "_messages", "_upgraded", "_manager", "_loop"):
        assert any(name in getattr(k, "__slots__", ()) for k in RequestHandler.__mro__), moved(
            f"RequestHandler.{name}", user
        )
    assert inspect.iscoroutinefunction(web.AppRunner._make_server), moved("web.AppRunner._make_server", user)

    async def handle(request):
        return web.Response(text="ok")

    server = web.Server(handle)
    try:
        server.__class__ = connections._GuardedServer  # what GuardedRunner._make_server does
    except TypeError as exc:
        pytest.fail(moved(f"web.Server's layout ({exc})", user))
    assert isinstance(server._kwargs, dict) and isinstance(server._connections, dict), moved(
        "web.Server._kwargs / _connections", user
    )
    server.limits = connections.Limits(header=30.0, idle=30.0, body=30.0, max_connections=100)
    server.closures, server.silent = connections._Closures(), {}
    handler = server()
    assert isinstance(handler, connections._GuardedHandler) and handler._manager is server
    assert handler._request_count == 0 and isinstance(handler._messages, collections.deque)
    assert handler._upgraded is False and handler._loop is asyncio.get_running_loop()
    transport = _Transport()
    handler.connection_made(transport)
    try:
        assert handler in server._connections and handler in server.silent
        handler.data_received(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
        assert handler._request_count == 1, moved("RequestHandler._request_count (heads parsed)", user)
        message, payload = handler._messages[-1]
        assert message.path == "/x" and not payload.is_eof(), moved("RequestHandler._messages", user)
        assert handler._body is payload and handler._deadline is not None  # the body deadline is armed
        assert handler not in server.silent
    finally:
        handler.force_close()
        handler.connection_lost(None)
        await asyncio.sleep(0)


# -- server/metric_files.py ----------------------------------------------------------------------------


def test_prometheus_multiprocess_values_open_their_files_through_the_module_name(tmp_path, monkeypatch):
    user = "server/metric_files.py (install, ReservedMmapedDict)"
    from prometheus_client import mmap_dict, values

    assert isinstance(mmap_dict._INITIAL_MMAP_SIZE, int), moved("mmap_dict._INITIAL_MMAP_SIZE", user)
    assert hasattr(values, "MmapedDict"), moved("prometheus_client.values.MmapedDict", user)
    monkeypatch.setattr(values, "MmapedDict", values.MmapedDict)  # undone after the test
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metric_files.install()
    value = values.MultiProcessValue(process_identifier=lambda: 4242)("counter", "x", "x_total", (), (), "help")
    value.inc(1)
    assert type(value._file) is metric_files.ReservedMmapedDict, moved(
        "MultiProcessValue opening its file as values.MmapedDict", user
    )
    value._file.close()


@pytest.mark.parametrize("key_chars", [1, 3, 4, 5, 11, 12, 200, 70_000])
def test_mmaped_dict_entries_fit_in_what_the_reservation_counts(tmp_path, key_chars):
    """ReservedMmapedDict reserves ``4 + len(key) + 8 + 16`` bytes for an entry before MmapedDict writes it,
    reading ``_used``, ``_capacity``, ``_f`` and ``_fname``: an entry must never be larger."""
    user = "server/metric_files.py (ReservedMmapedDict._init_value)"
    path = tmp_path / "counter_1.db"
    mapped = metric_files.ReservedMmapedDict(str(path))
    try:
        for name in ("_used", "_capacity", "_f", "_fname"):
            assert hasattr(mapped, name), moved(f"MmapedDict.{name}", user)
        key = "k" * key_chars
        used, capacity = mapped._used, mapped._capacity
        mapped._init_value(key)
        assert mapped._used - used <= 4 + len(key.encode()) + 8 + 16, moved("MmapedDict's entry layout", user)
        assert mapped._used <= mapped._capacity and mapped._capacity >= capacity
        assert path.stat().st_blocks * 512 >= mapped._capacity, "the grown file's blocks are reserved"
        assert struct.unpack_from("i", path.read_bytes(), 0)[0] == mapped._used
    finally:
        mapped.close()
