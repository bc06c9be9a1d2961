"""
Hostile traffic on the HTTP port: a 1 MiB request line, 10,000 headers,
bodies shorter or longer than announced, broken chunked coding, bad
Content-Length values, invalid UTF-8 and deeply nested JSON, a client that
sends one byte at a time, random bytes, clients that vanish, many idle
connections, garbage after an h2c preface. Never a 500; after each the
server still answers everyone else promptly, and at the end it exits 0 on
SIGTERM with a clean sanitizer report.
"""

import http.client
import json
import random
import select
import socket
import struct
import threading
import time

import h2.exceptions
import pytest

from conftest import (
    API, SANITIZER_MARKERS, Http1Reader, KeepAlive, RawH2, ServerFactory, append, chunked, event_count, event_data,
    expect_error, expect_ok, failing_alloc_env, http_connect, http_get, json_body, poll,
    raise_nofile, read_stream, read_until_closed, request_bytes, server_version, stream_path,
    unique, wait_http_ready,
)

IDLE_CONNECTIONS = 1000
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory, pb, pb_grpc, request):
    raise_nofile(IDLE_CONNECTIONS + 4096)
    factory = ServerFactory(tmp_path_factory, "http-hostile", request.session)
    s = factory.new()
    wait_http_ready(s)
    yield s
    factory.finish()


def serves(server, stub=None, within=5.0):
    """A fresh HTTP client and the gRPC stub get answers, promptly."""
    t0 = time.monotonic()
    assert expect_ok(http_get(server, f"{API}/version", timeout=within))["version"]
    assert time.monotonic() - t0 < within, "the server is slow to answer a fresh client"
    if stub is not None:
        assert server_version(stub, timeout=30)
    assert server.alive(), "the server exited"


def not_500(r):
    assert r is None or r.status < 500, f"bad input answered with a server error: {r!r}"


def post_head(stream, length=None, extra=()):
    headers = [("Content-Type", "application/json")] + list(extra)
    if length is not None:
        headers.append(("Content-Length", str(length)))
    return request_bytes("POST", stream_path(stream), headers=headers)


def good_body(version=0, n=1):
    return json_body({"version": version, "events": [{"type": "H", "data": "aGk="}] * n})


# ---- request line and headers -----------------------------------------------------------------

def test_one_mebibyte_request_line(server, stub):
    with http_connect(server.http_port) as s:
        reader = Http1Reader(s)
        try:
            s.sendall(b"GET /api/v1/stream/" + b"a" * (1024 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass  # answered and closed before we finished writing
        r = reader.read_response(timeout=15)
        if r is not None:
            assert r.status in (400, 414, 431), f"a 1 MiB request line: {r!r}"
    serves(server, stub)


def test_ten_thousand_headers_is_431(server, stub):
    head = "GET /api/v1/version HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"X-H{i}: v{i}\r\n" for i in range(10000)) + "\r\n"
    with http_connect(server.http_port) as s:
        reader = Http1Reader(s)
        try:
            s.sendall(head.encode())
        except OSError:
            pass
        r = reader.read_response(timeout=15)
        assert r is not None, "10,000 headers: connection closed without a 431"
        expect_error(r, 431, "RESOURCE_EXHAUSTED")
        assert reader.wait_closed(timeout=10), "the connection should close after a 431"
    serves(server, stub)


def test_ten_thousand_headers_over_h2c_is_431(server, stub):
    """The same header list over h2c (HPACK-compressed, so it fits the framing limits): 431 too, or refused."""
    extra = [(f"x-h{i}", f"v{i}") for i in range(10000)]
    with RawH2(server.http_port, timeout=20) as h:
        try:
            sid = h.request("GET", f"{API}/version", extra=extra)
            r = h.response(sid, timeout=15)
        except (OSError, TimeoutError, h2.exceptions.H2Error) as e:
            r = e
        if isinstance(r, Exception) or r.reset_code is not None or r.http_status is None:
            pass  # the stream or the connection was refused: acceptable for HTTP/2
        else:
            assert r.http_status == 431, \
                f"10,000 headers over h2c answered {r.http_status} (HTTP/1.1 answers 431): {r!r} {bytes(r.data)[:200]!r}"
            assert json.loads(bytes(r.data)).get("code") == "RESOURCE_EXHAUSTED", r
    serves(server, stub)


def test_one_mebibyte_header_over_h2c(server, stub):
    """A 1 MiB header value over h2c: 431, or the stream or connection refused; the server stays up."""
    with RawH2(server.http_port, timeout=20) as h:
        # Plain (not Huffman) HPACK strings: python's Huffman coder takes minutes on 1 MiB.
        encode = h.conn.encoder.encode
        h.conn.encoder.encode = lambda headers, huffman=False: encode(headers, huffman=False)
        try:
            sid = h.request("GET", f"{API}/version", extra=[("x-big", "a" * (1 << 20))])
            r = h.response(sid, timeout=15)
            assert r.http_status in (None, 431), f"a 1 MiB header over h2c: {r!r}"
        except (OSError, TimeoutError, h2.exceptions.H2Error):
            pass
    serves(server, stub)


@pytest.mark.parametrize("value", ["abc", "-1", "1 2", "0x10", "99999999999999999999999"])
def test_bad_content_length_is_400(server, stub, value):
    stream = unique("cl")
    with http_connect(server.http_port) as s:
        reader = Http1Reader(s)
        s.sendall(post_head(stream, extra=[("Content-Length", value)]) + good_body())
        r = reader.read_response(timeout=10)
        assert r is not None, f"Content-Length: {value}: closed without a response"
        if value == "99999999999999999999999":
            assert r.status in (400, 413), r
        else:
            expect_error(r, 400, "INVALID_ARGUMENT")
    assert read_stream(stub, stream) == []
    serves(server, stub)


def test_two_different_content_lengths_are_400(server, stub):
    stream = unique("cl2")
    body = good_body()
    with http_connect(server.http_port) as s:
        reader = Http1Reader(s)
        s.sendall(post_head(stream, extra=[("Content-Length", str(len(body))),
                                           ("Content-Length", str(len(body) + 1))]) + body + b"x")
        r = reader.read_response(timeout=10)
        assert r is not None and r.status == 400, r
    assert read_stream(stub, stream) == []
    serves(server, stub)


# ---- bodies shorter or longer than announced ------------------------------------------------------

def test_body_shorter_than_content_length(server, stub):
    stream = unique("short")
    body = good_body()
    count = event_count(stub)
    s = http_connect(server.http_port)
    s.sendall(post_head(stream, len(body) + 100) + body)
    # The server waits for the rest: nothing comes back meanwhile.
    s.settimeout(0.5)
    try:
        got = s.recv(65536)
        raise AssertionError(f"the server answered a request whose body is still incomplete: {got[:300]!r}")
    except socket.timeout:
        pass
    serves(server, stub)  # and everyone else is served meanwhile
    s.close()
    serves(server, stub)
    assert read_stream(stub, stream) == [], "an incomplete request wrote events"
    assert event_count(stub) == count


def test_body_longer_than_content_length(server, stub):
    stream = unique("long")
    body = good_body()
    with http_connect(server.http_port) as s:
        reader = Http1Reader(s)
        # The extra bytes are the next request: here a valid one...
        s.sendall(post_head(stream, len(body)) + body + request_bytes("GET", stream_path(stream)))
        assert expect_ok(reader.read_response(timeout=10))["first_version"] == 0
        assert len(expect_ok(reader.read_response(timeout=10))["events"]) == 1
        # ... and here garbage: a 400.
        body = good_body(version=1)
        s.sendall(post_head(stream, len(body)) + body + b"{not http at all}\r\n\r\n")
        assert expect_ok(reader.read_response(timeout=10))["first_version"] == 1
        r = reader.read_response(timeout=10)
        assert r is not None, "garbage after a body: closed without a 400"
        expect_error(r, 400, "INVALID_ARGUMENT")
    assert len(read_stream(stub, stream)) == 2
    serves(server, stub)


# ---- chunked bodies ------------------------------------------------------------------------------

def test_valid_chunked_bodies(server, stub):
    stream = unique("chunk")
    codings = [
        lambda body: chunked(body),
        lambda body: chunked(*[body[i:i + 1] for i in range(len(body))]),  # one byte per chunk
        lambda body: b"".join(b"%X;ext=1\r\n%s\r\n" % (len(body[i:i + 10]), body[i:i + 10])
                              for i in range(0, len(body), 10)) + b"0\r\n\r\n",  # extensions, uppercase hex
        lambda body: chunked(body[:7], body[7:])[:-2] + b"X-Trailer: yes\r\n\r\n",  # a trailer field
    ]
    with http_connect(server.http_port) as s:
        reader = Http1Reader(s)
        for n, coding in enumerate(codings):
            b = coding(good_body(version=3 * n, n=3))
            head = post_head(stream, extra=[("Transfer-Encoding", "chunked")])
            # Split the coding across writes at awkward places.
            s.sendall(head + b[:3])
            for i in range(3, len(b), 11):
                s.sendall(b[i:i + 11])
            r = reader.read_response(timeout=10)
            assert r is not None, f"chunked case {n}: closed"
            assert expect_ok(r)["first_version"] == 3 * n, r
    assert len(read_stream(stub, stream)) == 12
    serves(server, stub)


@pytest.mark.parametrize("coded", [
    b"zz\r\n{}\r\n0\r\n\r\n",
    b"-1\r\n{}\r\n0\r\n\r\n",
    b" \r\n{}\r\n0\r\n\r\n",
    b"2\r\n{}XX0\r\n\r\n",  # no CRLF after the chunk data
    b"3\r\n{}\r\n0\r\n\r\n",  # size larger than the data: the CRLF lands wrong
], ids=["zz", "negative", "blank", "no-crlf", "size-mismatch"])
def test_invalid_chunked_is_400(server, stub, coded):
    stream = unique("badchunk")
    with http_connect(server.http_port) as s:
        reader = Http1Reader(s)
        s.sendall(post_head(stream, extra=[("Transfer-Encoding", "chunked")]) + coded)
        r = reader.read_response(timeout=10)
        assert r is not None, f"invalid chunked {coded!r}: closed without a 400"
        expect_error(r, 400, "INVALID_ARGUMENT")
    assert read_stream(stub, stream) == []
    serves(server, stub)


def test_huge_chunk_size(server, stub):
    stream = unique("hugechunk")
    with http_connect(server.http_port) as s:
        reader = Http1Reader(s)
        s.sendall(post_head(stream, extra=[("Transfer-Encoding", "chunked")]) + b"ffffffffffffffffff\r\n{}")
        r = reader.read_response(timeout=10)
        assert r is not None, "a 2^72 chunk size: closed without a response"
        assert r.status in (400, 413), r
    serves(server, stub)


# ---- JSON that is not ---------------------------------------------------------------------------

INVALID_UTF8 = {
    "raw 0xff in a value": b'{"version":0,"events":[{"type":"T\xff"}]}',
    "raw 0xfe 0xff": b'{"version":0,"events":[{"type":"\xfe\xff"}]}',
    "truncated sequence": b'{"version":0,"events":[{"type":"caf\xc3"}]}',
    "overlong slash": b'{"version":0,"events":[{"type":"\xc0\xaf"}]}',
    "encoded surrogate": b'{"version":0,"events":[{"type":"\xed\xa0\x80"}]}',
    "above U+10FFFF": b'{"version":0,"events":[{"type":"\xf4\x90\x80\x80"}]}',
    "lone surrogate escape": b'{"version":0,"events":[{"type":"\\ud800"}]}',
    "lone low surrogate escape": b'{"version":0,"events":[{"type":"x\\udc00y"}]}',
    "invalid in a key": b'{"version":0,"events":[{"typ\xff":"T"}]}',
    "invalid in an id": b'{"version":0,"events":[{"type":"T","id":"\xff"}]}',
    "nul escape in type": b'{"version":0,"events":[{"type":"a\\u0000b"}]}',
}


@pytest.mark.parametrize("case", list(INVALID_UTF8))
def test_invalid_utf8_in_json_is_400(server, stub, case):
    stream = unique("utf8")
    count = event_count(stub)
    with KeepAlive(server.http_port) as conn:
        r = conn.request("POST", stream_path(stream), body=INVALID_UTF8[case],
                         headers={"Content-Type": "application/json"})
        if case == "nul escape in type":
            # A NUL is valid UTF-8; the server may store it or refuse it, never fail.
            assert r.status in (200, 400), r
            if r.status == 400:
                expect_error(r, 400, "INVALID_ARGUMENT")
        else:
            expect_error(r, 400, "INVALID_ARGUMENT")
            assert read_stream(stub, stream) == []
            assert event_count(stub) == count
        expect_ok(conn.get(f"{API}/version"))


@pytest.mark.parametrize("shape", ["arrays", "objects", "in events", "in type"])
def test_deeply_nested_json_is_400(server, stub, shape):
    depth = 100000
    body = {
        "arrays": b"[" * depth + b"]" * depth,
        "objects": b'{"a":' * depth + b"1" + b"}" * depth,
        "in events": b'{"version":0,"events":' + b"[" * depth + b"]" * depth + b"}",
        "in type": b'{"version":0,"events":[{"type":' + b'{"x":' * depth + b"1" + b"}" * depth + b"}]}",
    }[shape]
    stream = unique("deep")
    with KeepAlive(server.http_port) as conn:
        r = conn.request("POST", stream_path(stream), body=body, headers={"Content-Type": "application/json"})
        expect_error(r, 400, "INVALID_ARGUMENT")
        expect_ok(conn.get(f"{API}/version"))
    assert read_stream(stub, stream) == []
    serves(server, stub)


def test_huge_numbers_and_odd_json(server, stub):
    stream = unique("odd")
    with KeepAlive(server.http_port) as conn:
        for body in (b'{"version":1e999,"events":[{"type":"T"}]}',
                     b'{"version":123456789012345678901234567890,"events":[{"type":"T"}]}',
                     b'{"version":-0.0,"events":[{"type":"T"}]}',
                     b'{"version":NaN,"events":[{"type":"T"}]}',
                     b'{"version":-1,"events":[{"type":"T"}],"version":-1}',
                     b"\xef\xbb\xbf" + b'{"version":-1,"events":[{"type":"T","data":"AAAA"}]}',
                     b"\x00" * 100):
            r = conn.request("POST", stream_path(stream), body=body, headers={"Content-Type": "application/json"})
            not_500(r)
            assert r.status in (200, 400), r
        expect_ok(conn.get(f"{API}/version"))
    serves(server, stub)


# ---- slow, vanishing and idle clients ------------------------------------------------------------

def test_slow_clients_do_not_block_others(server, stub):
    """16 clients each send 5 bytes over ~3 s (one every 0.6 s); meanwhile fresh clients get answers within 2 s."""
    stop = threading.Event()
    socks = [http_connect(server.http_port) for _ in range(16)]
    text = request_bytes("GET", f"{API}/version")

    def dribble():
        for i in range(5):
            if stop.is_set():
                return
            for s in socks:
                try:
                    s.sendall(text[i:i + 1])
                except OSError:
                    pass
            stop.wait(0.6)

    t = threading.Thread(target=dribble)
    t.start()
    try:
        worst = 0.0
        served = 0
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end or served < 10:
            t0 = time.monotonic()
            r = http_get(server, f"{API}/event/count", timeout=2.0)
            elapsed = time.monotonic() - t0
            worst = max(worst, elapsed)
            assert r.status == 200, r
            assert elapsed < 2.0, f"a fresh client waited {elapsed:.2f} s while slow clients dribbled"
            served += 1
    finally:
        stop.set()
        t.join(timeout=10)
    for s in socks:
        s.close()
    serves(server, stub)


def test_clients_vanish_mid_request(server, stub):
    stream = unique("vanish")
    count = event_count(stub)
    body = good_body(n=5)
    full = post_head(stream, len(body)) + body
    rng = random.Random(5)
    for _ in range(40):
        cut = rng.randrange(1, len(full))
        s = http_connect(server.http_port)
        try:
            s.sendall(full[:cut])
        except OSError:
            pass
        if rng.random() < 0.5:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
        s.close()
    serves(server, stub)
    assert read_stream(stub, stream) == []
    assert event_count(stub) == count


def test_client_vanishes_before_reading_a_big_response(server, stub):
    """Many pipelined reads of a large page, then a reset without reading anything."""
    stream = unique("bigread")
    append(stub, stream, [event_data("B", b"r" * 100000)] * 10)
    for _ in range(3):
        s = http_connect(server.http_port)
        s.sendall(request_bytes("GET", stream_path(stream)) * 10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    serves(server, stub)


def test_random_bytes(server, stub):
    rng = random.Random(20240607)
    for i in range(20):
        size = rng.choice([1, 7, 64, 1000, 65536])
        junk = bytes(rng.getrandbits(8) for _ in range(size)) + b"\r\n\r\n"
        with http_connect(server.http_port) as s:
            reader = Http1Reader(s)
            try:
                s.sendall(junk)
            except OSError:
                continue
            try:
                r = reader.read_response(timeout=10)
            except (AssertionError, ValueError):
                r = None  # not even an HTTP response: the connection is what matters
            not_500(r)
            if r is not None:
                assert r.status in (400, 414, 431), f"random bytes #{i}: {r!r}"
    serves(server, stub)


def test_garbage_after_an_h2c_preface(server, stub):
    rng = random.Random(11)
    socks = []
    try:
        # Random bytes after the preface: whatever the server makes of them, it serves others.
        for size in (9, 100, 5000):
            s = http_connect(server.http_port)
            socks.append(s)
            try:
                s.sendall(PREFACE + bytes(rng.getrandbits(8) for _ in range(size)))
            except OSError:
                pass
        serves(server, stub)
        # A SETTINGS frame header claiming 16 MiB: FRAME_SIZE_ERROR, the connection goes.
        with http_connect(server.http_port) as s:
            s.sendall(PREFACE + b"\xff\xff\xff\x04\x00\x00\x00\x00\x00")
            closed, _ = read_until_closed(s, timeout=10)
            assert closed, "a 16 MiB SETTINGS frame after the h2c preface left the connection open"
        # A PING as the first frame (it must be SETTINGS): PROTOCOL_ERROR, the connection goes.
        with http_connect(server.http_port) as s:
            s.sendall(PREFACE + b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678")
            closed, _ = read_until_closed(s, timeout=10)
            assert closed, "a PING as the first h2c frame left the connection open"
    finally:
        for s in socks:
            s.close()
    serves(server, stub)


def test_thousands_of_idle_connections(server, stub):
    socks = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            socks.append(http_connect(server.http_port))
        # Half of them begin a request and stop.
        for s in socks[::2]:
            s.sendall(b"GET /api/v1/version HTTP/1.1\r\n")
        t0 = time.monotonic()
        serves(server, stub)
        stream = unique("idle")
        r = KeepAlive(server.http_port)
        try:
            expect_ok(r.request("POST", stream_path(stream), body=good_body(),
                                headers={"Content-Type": "application/json"}))
            expect_ok(r.get(stream_path(stream)))
        finally:
            r.close()
        assert time.monotonic() - t0 < 5, "slow service with many idle connections"
    finally:
        for s in socks:
            s.close()
    serves(server, stub)


# ---- timeouts -------------------------------------------------------------------------------------

REQUEST_TIMEOUT_MS = 500
IDLE_TIMEOUT_MS = 800
TIMEOUTS = {"HTTP_REQUEST_TIMEOUT_MS": str(REQUEST_TIMEOUT_MS),
            "HTTP_IDLE_TIMEOUT_MS": str(IDLE_TIMEOUT_MS)}
BOUND = 10.0  # seconds within which a timed-out connection must be answered and closed


@pytest.fixture(scope="module")
def timeout_server(tmp_path_factory, pb, pb_grpc, request):
    """A server of its own with short HTTP/1.1 timeouts."""
    factory = ServerFactory(tmp_path_factory, "http-timeouts", request.session)
    s = factory.new(env=TIMEOUTS)
    wait_http_ready(s)
    yield s
    factory.finish()


def expect_408_then_close(sock, started, what):
    """The next response is a 408 with the errors' JSON, after the request timeout; then the close."""
    reader = Http1Reader(sock)
    r = reader.read_response(timeout=BOUND)
    elapsed = time.monotonic() - started
    assert r is not None, f"{what}: closed without a 408"
    text = expect_error(r, 408, "DEADLINE_EXCEEDED")
    assert elapsed >= REQUEST_TIMEOUT_MS / 1000 * 0.9, f"{what}: 408 after {elapsed:.2f} s: {text}"
    assert reader.wait_closed(timeout=BOUND), f"{what}: the connection stayed open after the 408"
    return text


def test_half_a_head_is_408_then_closed(timeout_server):
    with http_connect(timeout_server.http_port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/v1/version HTTP/1.1\r\nHost: x\r\nX-Half: ")
        text = expect_408_then_close(sock, started, "half a head")
        assert "head" in text, text
    serves(timeout_server)


def test_a_head_dribbled_past_the_timeout_is_408(timeout_server):
    """The head must arrive whole within the timeout: bytes that keep coming do not extend it."""
    head = request_bytes("GET", f"{API}/version", headers=[("X-Pad", "p" * 100)])
    with http_connect(timeout_server.http_port) as sock:
        started = time.monotonic()
        answer = None
        for i in range(len(head) - 2):  # never the last CRLF
            sock.sendall(head[i:i + 1])
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                answer = time.monotonic()
                break
        assert answer is not None, "a head dribbled for longer than the timeout was never answered"
        expect_408_then_close(sock, started, "a dribbled head")
    serves(timeout_server)


def test_half_a_body_is_408_then_closed(timeout_server):
    stream = unique("halfbody")
    body = good_body()
    with http_connect(timeout_server.http_port) as sock:
        sock.sendall(post_head(stream, len(body)) + body[:len(body) // 2])
        started = time.monotonic()
        text = expect_408_then_close(sock, started, "half a body")
        assert "body" in text, text
    assert read_stream(timeout_server.stub(), stream) == []
    serves(timeout_server)


def test_a_slow_but_progressing_body_is_not_cut(timeout_server):
    """A body sent over four request timeouts, a piece every tenth of one, is answered 200."""
    stream = unique("slowbody")
    body = json_body({"version": 0, "events": [{"type": "S", "data": "eA=="}] * 40})
    pieces = 40
    step = -(-len(body) // pieces)
    with http_connect(timeout_server.http_port) as sock:
        sock.sendall(post_head(stream, len(body)))
        started = time.monotonic()
        for i in range(0, len(body) - step, step):
            sock.sendall(body[i:i + step])
            readable, _, _ = select.select([sock], [], [], REQUEST_TIMEOUT_MS / 1000 / 10)
            assert not readable, f"answered before the body was whole: {sock.recv(300)!r}"
        sock.sendall(body[i + step:])
        assert time.monotonic() - started > 3 * REQUEST_TIMEOUT_MS / 1000
        r = Http1Reader(sock).read_response(timeout=BOUND)
        assert expect_ok(r)["first_version"] == 0
    assert len(read_stream(timeout_server.stub(), stream)) == 40


def test_an_idle_keep_alive_connection_is_closed(timeout_server):
    with http_connect(timeout_server.http_port) as sock:
        reader = Http1Reader(sock)
        sock.sendall(request_bytes("GET", f"{API}/version"))
        expect_ok(reader.read_response(timeout=BOUND))
        answered = time.monotonic()
        assert reader.wait_closed(timeout=BOUND), "an idle keep-alive connection stayed open"
        idle = time.monotonic() - answered
        assert idle >= IDLE_TIMEOUT_MS / 1000 * 0.9, f"closed after {idle:.2f} s idle"
        assert bytes(reader.buf) == b"", f"an idle connection was sent {bytes(reader.buf)!r}"
    # A connection that never sent a byte is idle too.
    with http_connect(timeout_server.http_port) as sock:
        assert Http1Reader(sock).wait_closed(timeout=BOUND), "a silent connection stayed open"


def test_a_subscription_outlives_the_timeouts(timeout_server):
    """An SSE stream that has nothing to send is the server's turn to speak: no timeout cuts it."""
    stream = unique("ssetimeout")
    stub = timeout_server.stub()
    append(stub, stream, 1, version=0)
    path = f"{API}/stream/{stream}/subscribe?version=0"
    with http_connect(timeout_server.http_port) as sock:
        sock.sendall(request_bytes("GET", path))
        closed, got = read_until_closed(sock, timeout=4 * IDLE_TIMEOUT_MS / 1000)
        assert not closed, f"the subscription was cut: {got[-300:]!r}"
        assert got.startswith(b"HTTP/1.1 200"), got[:300]
        append(stub, stream, 1, version=1)
        closed, more = read_until_closed(sock, timeout=1.0)
        assert b"id: 1\n" in more, f"no live event after the wait: {more!r}"


# ---- out of memory --------------------------------------------------------------------------------

def answers_again(s, times=5):
    """Whether `times` fresh HTTP/1.1 requests in a row get 200 (False on any other outcome)."""
    try:
        return all(http_get(s, f"{API}/version", timeout=5).status == 200 for _ in range(times))
    except (OSError, http.client.HTTPException):
        return False


def test_out_of_memory_while_parsing_is_503_never_4xx(server_factory, tmp_path):
    """
    While one allocation in 7 fails, requests whose target and body the parser must copy (GET
    /version, which ignores its body) get 200 or 503 (with the errors' JSON, whole, if any), or
    lose their connection: never a 4xx, which would blame the client. The connections are open and
    served before the failures begin, so what fails is their requests. Afterwards the server serves.
    """
    flag = tmp_path / "fail-allocations"
    s = server_factory.new(env=failing_alloc_env(flag, every=7))
    wait_http_ready(s)
    request = request_bytes("GET", f"{API}/version?pad={'p' * 4000}", body=b"x" * 20000,
                            headers=[("Content-Type", "text/plain")])
    conns = []
    for _ in range(40):
        sock = http_connect(s.http_port)
        sock.sendall(request_bytes("GET", f"{API}/version"))
        conns.append((sock, Http1Reader(sock)))
        expect_ok(conns[-1][1].read_response(timeout=15))
    seen = {}
    flag.touch()
    try:
        for sock, reader in conns:
            try:
                sock.sendall(request * 4)
            except OSError:
                pass  # the connection was lost: allowed
            for _ in range(4):
                r = reader.read_response(timeout=15)
                if r is None:
                    seen["closed"] = seen.get("closed", 0) + 1
                    break
                seen[r.status] = seen.get(r.status, 0) + 1
                assert r.status in (200, 503), f"out of memory answered {r!r}"
                if r.status == 503 and r.body:  # no body when even that found no memory
                    expect_error(r, 503, "RESOURCE_EXHAUSTED")
    finally:
        flag.unlink()
        for sock, _ in conns:
            sock.close()
    assert seen.get(503), f"no allocation failure was answered 503: {seen}"
    poll(lambda: answers_again(s), what="allocations to succeed again")
    serves(s)


def test_sigterm_with_http_connections_open_exits_cleanly(server, stub):
    """Last: SIGTERM with idle, half-sent and kept-alive HTTP connections; exit 0, no sanitizer report."""
    socks = [http_connect(server.http_port) for _ in range(100)]
    stream = unique("pending")
    body = good_body()
    socks[0].sendall(post_head(stream, len(body)) + body[:10])
    socks[1].sendall(b"GET /api/v1/ver")
    ka = KeepAlive(server.http_port)
    expect_ok(ka.get(f"{API}/version"))
    try:
        rc = server.stop(check=False)
        assert rc == 0, f"exit code {rc} after SIGTERM"
        text = server.stderr_text()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"sanitizer report in the server's stderr: {marker}"
    finally:
        ka.close()
        for s in socks:
            s.close()
