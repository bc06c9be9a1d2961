"""
Hostile traffic on the gRPC port: random bytes, HTTP/1.1, clients that
vanish mid-request, stream resets, oversized headers, thousands of idle
connections. After each the server must still answer normal clients, and at
the end it must exit 0 on SIGTERM with a clean sanitizer report (the ASan
build reports leaks at exit).

The module's server is started after this process raised its RLIMIT_NOFILE,
so the server inherits the higher limit too.
"""

import random
import socket
import time

import h2.exceptions
import pytest

from conftest import (
    SANITIZER_MARKERS, RawH2, ServerFactory, append, event_data, grpc_frame, raise_nofile,
    read_stream, read_until_closed, server_version, unique,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
IDLE_CONNECTIONS = 2000


@pytest.fixture(scope="module")
def server(tmp_path_factory, pb, pb_grpc, request):
    raise_nofile(IDLE_CONNECTIONS + 4096)
    factory = ServerFactory(tmp_path_factory, "hostile", request.session)
    s = factory.new()
    yield s
    factory.finish()


def serves(server, stub=None):
    """A normal client gets answers (a fresh connection, and the given stub)."""
    fresh = server.stub(server.channel(own_connection=True))
    assert server_version(fresh, timeout=30)
    if stub is not None:
        assert server_version(stub, timeout=30)
    assert server.alive(), "the server exited"
    return fresh


def connect(server, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def test_random_bytes_without_preface_are_dropped(server, stub):
    rng = random.Random(20240607)
    for i in range(16):
        size = rng.choice([1, 7, 24, 100, 4096, 65536])
        junk = bytes(rng.getrandbits(8) for _ in range(size))
        if junk[:1] == b"P":
            junk = b"X" + junk[1:]
        with connect(server) as s:
            try:
                s.sendall(junk)
            except OSError:
                continue  # the server already closed on us: fine
            closed, _ = read_until_closed(s, timeout=10)
            assert closed, f"connection {i} with {size} random bytes was not closed within 10 s"
    serves(server, stub)


def test_garbage_after_a_valid_preface(server, stub):
    rng = random.Random(7)
    socks = []
    try:
        for size in (9, 64, 1000, 20000):
            s = connect(server)
            socks.append(s)
            try:
                s.sendall(PREFACE + bytes(rng.getrandbits(8) for _ in range(size)))
            except OSError:
                pass
        # A SETTINGS frame header claiming 16 MiB: FRAME_SIZE_ERROR, the connection goes.
        s = connect(server)
        socks.append(s)
        s.sendall(PREFACE + b"\xff\xff\xff\x04\x00\x00\x00\x00\x00")
        closed, _ = read_until_closed(s, timeout=10)
        assert closed, "a 16 MiB SETTINGS frame did not close the connection"
        serves(server, stub)
    finally:
        for s in socks:
            s.close()
    serves(server, stub)


def test_random_bytes_then_reset(server, stub):
    import struct
    rng = random.Random(99)
    for _ in range(20):
        s = connect(server)
        try:
            s.sendall(PREFACE[:rng.randrange(1, 24)] + bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 500))))
        except OSError:
            pass
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    serves(server, stub)


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"POST /api.EventStore/Version HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/grpc\r\n"
    b"Content-Length: 5\r\n\r\n\x00\x00\x00\x00\x00",
    b"GET / HTTP/1.0\r\n\r\n",
], ids=["GET", "POST grpc", "HTTP/1.0"])
def test_http1_on_the_grpc_port(server, stub, request_bytes):
    with connect(server) as s:
        s.sendall(request_bytes)
        closed, got = read_until_closed(s, timeout=10)
        assert closed, f"an HTTP/1 request left the connection open (got {got[:200]!r})"
        assert b"200 OK" not in got, f"HTTP/1 was answered as if valid: {got[:200]!r}"
    serves(server, stub)


def _append_body(pb, stream, n=3, version=0):
    req = pb.AppendToStreamRequest(stream=stream, version=version,
                                   events=[event_data("Part", b"%d" % i * 200) for i in range(n)])
    return grpc_frame(req.SerializeToString())


def _all_or_nothing(stub, stream, n=3):
    """Appends a marker with version -1; the stream must be [marker] or [n events, marker]."""
    append(stub, stream, [event_data("Marker", b"m")], version=-1)
    got = read_stream(stub, stream)
    types = [e.type for e in got]
    assert types in (["Marker"], ["Part"] * n + ["Marker"]), f"partial append visible: {types}"
    assert [e.version for e in got] == list(range(len(got)))
    return len(got) > 1


def test_client_disconnects_mid_append(server, stub, pb):
    # Half the DATA, then the socket closes (FIN, or a TCP reset): nothing can be written.
    for abort in (False, True):
        stream = unique("half")
        body = _append_body(pb, stream)
        h = RawH2(server.grpc_port)
        sid = h.headers("/api.EventStore/AppendToStream")
        h.data(sid, body[:len(body) // 2])
        h.abort() if abort else h.close()
        assert read_stream(stub, stream) == []
        # The stream is untouched: an append expecting a new stream succeeds.
        assert append(stub, stream, 1, version=0).first_version == 0
    serves(server, stub)


def test_client_disconnects_after_the_whole_request(server, stub, pb):
    # The whole message (with or without END_STREAM), then gone before the answer:
    # the append is whole or absent, and the server does not trip over the dead connection.
    for round_ in range(20):
        gone = []
        for i in range(6):  # several at once: more chances to answer a dead connection
            stream = unique("gone")
            h = RawH2(server.grpc_port)
            sid = h.headers("/api.EventStore/AppendToStream")
            h.data(sid, _append_body(pb, stream), end_stream=(i % 2 == 0))
            gone.append((stream, h, (round_ + i) % 3 == 0))
        for _, h, abort in gone:
            h.abort() if abort else h.close()
        for stream, _, _ in gone:
            _all_or_nothing(stub, stream)
    serves(server, stub)


def test_many_streams_reset_at_once(server, stub, pb):
    with RawH2(server.grpc_port) as h:
        sids = []
        try:
            for i in range(2000):
                sid = h.headers("/api.EventStore/GetStream")
                h.data(sid, grpc_frame(pb.GetStreamRequest(stream="x").SerializeToString()))
                h.conn.reset_stream(sid)
                h.flush()
                sids.append(sid)
                if i % 100 == 99:  # read what came back, so neither side blocks on full buffers
                    h._receive_once(time.monotonic() + 0.01)
                    if h.closed:
                        break
        except (OSError, h2.exceptions.H2Error):
            pass  # the server may well GOAWAY and close an abusive connection
    # Half-open calls left hanging on a connection that then closes.
    with RawH2(server.grpc_port) as h:
        for _ in range(50):
            h.headers("/api.EventStore/AppendToStream")
    serves(server, stub)


def test_oversized_headers(server, stub):
    with RawH2(server.grpc_port) as h:
        # Plain (not Huffman) HPACK strings: python's Huffman coder takes seconds on 200 kB.
        encode = h.conn.encoder.encode
        h.conn.encoder.encode = lambda headers, huffman=False: encode(headers, huffman=False)
        try:
            sid = h.headers("/api.EventStore/Version", extra=[("x-junk", "a" * 200_000)])
            h.data(sid, grpc_frame(b""), end_stream=True)
            r = h.response(sid, timeout=10)
            assert r.grpc_status is None or r.grpc_status >= 0
        except (OSError, TimeoutError, h2.exceptions.H2Error):
            pass  # refusing or closing is fine; surviving is what matters
    serves(server, stub)


def test_thousands_of_idle_connections(server, stub, pb):
    limit = raise_nofile(IDLE_CONNECTIONS + 4096)
    n = min(IDLE_CONNECTIONS, limit - 500)
    assert n >= 1000, f"RLIMIT_NOFILE {limit} is too low for this test"
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10)
            if i % 4 == 0:
                s.sendall(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # empty SETTINGS
            socks.append(s)
        # A normal client is still served, writes and reads.
        fresh = serves(server, stub)
        stream = unique("busy")
        r = append(fresh, stream, 5, version=0)
        assert [e.id for e in read_stream(fresh, stream)] == list(r.events)
        assert server_version(stub, timeout=30)
    finally:
        for s in socks:
            s.close()
    serves(server, stub)


def test_sigterm_with_connections_open_exits_cleanly(server, stub, pb):
    """Last: SIGTERM with idle sockets and a half-sent request; exit 0 in 10 s, no sanitizer report."""
    socks = [connect(server) for _ in range(200)]
    h = RawH2(server.grpc_port)
    sid = h.headers("/api.EventStore/AppendToStream")
    h.data(sid, _append_body(pb, unique("pending"))[:10])
    try:
        rc = server.stop(check=False)
        assert rc == 0, f"exit code {rc} after SIGTERM"
        text = server.stderr_text()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"sanitizer report in the server's stderr: {marker}"
    finally:
        h.close()
        for s in socks:
            s.close()
