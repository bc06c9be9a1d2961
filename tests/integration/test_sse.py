"""
Subscriptions over HTTP/1.1 as Server-Sent Events, against the real server
binary: curl -N sees catch-up, caught_up, live events and heartbeats; a
reconnect with Last-Event-ID resumes exactly after the last id (global and
single stream); one stream's events with ids = versions; filters with
checkpoints; 1,000 idle subscriptions held open at once (raw sockets, one
selector, no thread per socket) that all get the new events; bad queries are
400 and h2c is 501.

One server for the module (SHARDS=2, SYNC=none, SSE_HEARTBEAT_MS=200,
SUBSCRIPTION_CHECKPOINT_MS=50) unless a test needs its own.

Sizes (environment knobs):
    EVF_SSE_CONNECTIONS  idle subscriptions held open at once (default 1000)
"""

import json
import os
import selectors
import socket
import subprocess
import time
import urllib.parse

import pytest

from conftest import (
    API, HOST, MIB, Http1Reader, RawH2, ServerFactory, append, curl, damage_stored_data, event_data,
    expect_error, http_connect, http_read_global, http_read_stream, http_request,
    move_first_stream_run, poll, quote_name, raise_nofile, request_bytes, scrape, unique,
    wait_global, wait_http_ready, wait_prom_ready, wait_server_read,
)

HEARTBEAT_MS = 200
CHECKPOINT_MS = 50
WAIT = 30.0
N_CONNECTIONS = int(os.environ.get("EVF_SSE_CONNECTIONS") or 1000)
GAUGE = "eventflowdb_subscriptions"


@pytest.fixture(scope="module")
def server(tmp_path_factory, pb, pb_grpc, request):
    factory = ServerFactory(tmp_path_factory, "sse", request.session)
    s = factory.new(env={"SHARDS": "2", "SSE_HEARTBEAT_MS": str(HEARTBEAT_MS),
                         "SUBSCRIPTION_CHECKPOINT_MS": str(CHECKPOINT_MS)})
    wait_http_ready(s)
    wait_prom_ready(s)
    yield s
    factory.finish()


@pytest.fixture(autouse=True)
def _module_server_survives(request):
    """After each test on the module server: it still answers /healthz, else the test that killed it fails."""
    yield
    if "server" not in request.fixturenames:
        return
    s = request.getfixturevalue("server")
    try:
        ok = http_request(s.http_port, "GET", "/healthz", timeout=5).status == 200
    except OSError:
        ok = False
    if not ok or not s.alive():
        pytest.fail(f"the module server died during this test:\n{s.stderr_tail(30)}", pytrace=False)


# --------------------------------------------------------------------------
# Parsing text/event-stream (and chunked bodies) incrementally
# --------------------------------------------------------------------------

class SseParser:
    """
    The event stream interpretation of the WHATWG HTML spec, kept literal: lines end
    in CRLF, LF or CR; ":" starts a comment; "field: value" (one leading space
    dropped); a blank line ends a block. records: dicts with "event", "id",
    "data" (lines joined by LF) as given in the block, plus "fields" (every field
    name, in order); comments: ("comment", text) entries in the same list.
    """

    def __init__(self):
        self.buf = b""
        self.block = None
        self.records = []
        self.events = []  # records with data and no event: field (what onmessage gets)
        self.special = []  # records with an event: field
        self.comments = []
        self.bad = []  # what the spec would ignore but a correct server never sends

    def feed(self, data):
        self.buf += data
        while True:
            i = min([k for k in (self.buf.find(b"\n"), self.buf.find(b"\r")) if k >= 0], default=-1)
            if i < 0 or (self.buf[i:i + 1] == b"\r" and i == len(self.buf) - 1):
                return  # no whole line (a CR at the end may be the start of CRLF)
            line = self.buf[:i]
            self.buf = self.buf[i + (2 if self.buf[i:i + 2] == b"\r\n" else 1):]
            self._line(line.decode("utf-8"))

    def _line(self, line):
        if line == "":
            if self.block is not None:
                rec = self.block
                self.block = None
                rec["data"] = "\n".join(rec.pop("data_lines")) if "data_lines" in rec else None
                self.records.append(rec)
                if rec.get("event") is None and rec["data"] is not None:
                    self.events.append(rec)
                else:
                    self.special.append(rec)
            return
        if line.startswith(":"):
            text = line[1:]
            self.comments.append(text[1:] if text.startswith(" ") else text)
            self.records.append(("comment", self.comments[-1]))
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if self.block is None:
            self.block = {"fields": []}
        self.block["fields"].append(name)
        if name == "data":
            self.block.setdefault("data_lines", []).append(value)
        elif name in ("event", "id"):
            if name in self.block:
                self.bad.append(f"field {name} twice in one block: {line!r}")
            self.block[name] = value
        else:
            self.bad.append(f"unexpected field line {line!r}")

    @property
    def heartbeats(self):
        return [c for c in self.comments if c.strip() == "heartbeat"]

    def caught_ups(self):
        return [r for r in self.special if r.get("event") == "caught_up"]

    def checkpoints(self):
        return [r for r in self.special if r.get("event") == "checkpoint"]


class ChunkedDecoder:
    """Incremental Transfer-Encoding: chunked decoding; ended once the last chunk is read."""

    def __init__(self):
        self.buf = b""
        self.left = None  # bytes left in the current chunk (+2 for its CRLF), None: expecting a size line
        self.ended = False

    def feed(self, data):
        self.buf += data
        out = bytearray()
        while not self.ended:
            if self.left is None:
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                size = int(self.buf[:i].split(b";")[0].strip(), 16)
                self.buf = self.buf[i + 2:]
                if size == 0:
                    self.ended = True
                    break
                self.left = size + 2
            take = min(self.left, len(self.buf))
            if take == 0:
                break
            chunk, self.buf = self.buf[:take], self.buf[take:]
            self.left -= take
            if self.left < 2:  # part of the CRLF after the data was read
                data_part = chunk[:len(chunk) - (2 - self.left)] if len(chunk) >= 2 - self.left else b""
                out += data_part
            else:
                out += chunk
            if self.left == 0:
                self.left = None
        return bytes(out)


class SseConn:
    """
    One subscription over a raw HTTP/1.1 socket: the response head, then the body
    (chunked decoded) into an SseParser. pump() reads what is there (bounded);
    feed() takes bytes read by someone else (a selector loop).
    """

    def __init__(self, port, path, headers=(), connect=True, decoded=False, recv_size=65536):
        self.port, self.path = port, path
        self.decoded = decoded  # curl hands over the body already de-chunked
        self.recv_size = recv_size
        self.head = b""
        self.status = None
        self.headers = {}
        self.te_chunked = False
        self.chunked = None
        self.parser = SseParser()
        self.closed = False
        self.raw = bytearray()
        self.sock = None
        if connect:
            self.sock = http_connect(port)
            self.sock.sendall(request_bytes("GET", path, headers=list(headers)))

    def feed(self, data):
        if not data:
            self.closed = True
            return
        if len(self.raw) < 4096:
            self.raw += data[:4096]
        if self.status is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].decode("latin-1"), self.head[end + 4:]
            lines = head.split("\r\n")
            self.status = int(lines[0].split(" ")[1])
            for line in lines[1:]:
                k, _, v = line.partition(":")
                self.headers[k.strip().lower()] = v.strip()
            self.te_chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
            if self.te_chunked and not self.decoded:
                self.chunked = ChunkedDecoder()
        body = self.chunked.feed(data) if self.chunked else data
        if body:
            self.parser.feed(body)

    def pump(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or self.closed:
            return False
        self.sock.settimeout(max(0.01, min(left, 0.5)))
        try:
            data = self.sock.recv(self.recv_size)
        except socket.timeout:
            return True
        except OSError:
            data = b""
        self.feed(data)
        return not self.closed

    def wait(self, pred, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while not pred(self):
            if self.status not in (None, 200):
                raise AssertionError(f"{self.path}: no {what}, the answer is not 200: {self.describe()}")
            if not self.pump(deadline):
                raise AssertionError(f"{self.path}: no {what} "
                                     f"({'connection closed' if self.closed else f'{timeout:.0f} s passed'}); "
                                     f"{self.describe()}")
        return self

    def describe(self):
        p = self.parser
        return (f"status {self.status}, headers {self.headers}, {len(p.events)} events "
                f"(last id {p.events[-1].get('id') if p.events else None}), special {p.special[-3:]}, "
                f"{len(p.comments)} comments, first bytes {bytes(self.raw[:300])!r}")

    def ids(self):
        return [int(r["id"]) for r in self.parser.events]

    def close(self):
        if self.sock is not None:
            self.sock.close()


def check_sse_head(conn):
    assert conn.status == 200, f"{conn.path}: {conn.describe()}"
    assert conn.headers.get("content-type", "").split(";")[0].strip() == "text/event-stream", conn.describe()
    assert conn.te_chunked, f"{conn.path}: not Transfer-Encoding: chunked: {conn.headers}"


def check_wellformed(conn_or_parser, label):
    p = conn_or_parser.parser if isinstance(conn_or_parser, SseConn) else conn_or_parser
    assert not p.bad, f"{label}: {p.bad[:5]}"
    for r in p.events:
        assert r["fields"][0] == "id" and r["fields"].count("data") == 1 and set(r["fields"]) == {"id", "data"}, \
            f"{label}: an event block must be id: then data: (no event: field): {r}"


def all_path(**query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{API}/stream/all/subscribe" + (f"?{q}" if q else "")


def stream_sub_path(stream, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{API}/stream/{quote_name(stream)}/subscribe" + (f"?{q}" if q else "")


def global_json(server, offset, upto):
    """The HTTP JSON of the global stream's events with offset < position <= upto (bounded wait for upto)."""
    def read():
        out, cp = [], offset
        while True:
            page = http_read_global(server, cp)
            if not page["events"]:
                return out if out and out[-1]["position"] >= upto or upto <= offset else None
            out += page["events"]
            cp = page["checkpoint"]
    return [e for e in poll(read, timeout=15, interval=0.05, what=f"position {upto} over HTTP") if e["position"] <= upto]


def head_after(stub):
    p = append(stub, unique("head"), 1).first_position
    wait_global(stub, p)
    return p


def last_position(resp):
    return resp.first_position + len(resp.events) - 1


def server_memory(server):
    """VmRSS - RssFile (the LMDB map's file pages grow with data whoever reads), bytes; and the fields."""
    fields = {}
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"] - fields.get("RssFile", 0), fields


# --------------------------------------------------------------------------
# curl -N
# --------------------------------------------------------------------------

class CurlSse:
    """curl -N -i on a subscription URL: its stdout (head, then the decoded body) parsed as it comes."""

    def __init__(self, url, max_time=60):
        self.url = url
        self.proc = subprocess.Popen(["curl", "-N", "-sS", "-i", "--http1.1", "--max-time", str(max_time), url],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.conn = SseConn(None, url, connect=False, decoded=True)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def wait(self, pred, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while not pred(self.conn):
            left = deadline - time.monotonic()
            if left <= 0 or self.conn.closed or self.conn.status not in (None, 200):
                raise AssertionError(f"curl {self.url}: no {what} "
                                     f"({'curl ended: ' + self.stderr() if self.conn.closed else 'timeout'}); "
                                     f"{self.conn.describe()}")
            if self.sel.select(timeout=min(left, 0.5)):
                try:
                    data = os.read(self.proc.stdout.fileno(), 65536)
                except BlockingIOError:
                    continue
                self.conn.feed(data)
        return self.conn

    def stderr(self):
        try:
            return self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
        except (OSError, ValueError):
            return ""

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.sel.close()
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_curl_catch_up_live_caught_up_and_heartbeats(server, stub):
    stream = unique("curl")
    append(stub, stream, [event_data("Before", b'{"i":%d}' % i, b"m") for i in range(3)])
    curl_sse = CurlSse(f"http://{HOST}:{server.http_port}{all_path(offset=0)}")
    try:
        conn = curl_sse.wait(lambda c: c.parser.caught_ups(), "caught_up event")
        # curl decodes the chunked body: the head it prints still says how it came.
        assert conn.status == 200, conn.describe()
        assert conn.headers.get("content-type", "").split(";")[0].strip() == "text/event-stream", conn.describe()
        assert conn.te_chunked, conn.headers
        cu = conn.parser.caught_ups()[0]
        cu_pos = json.loads(cu["data"])["position"]
        assert set(cu["fields"]) <= {"event", "data", "id"} and json.loads(cu["data"]) == {"position": cu_pos}, cu
        upto = conn.parser.records.index(cu)
        caught = [r for r in conn.parser.records[:upto] if isinstance(r, dict) and r.get("event") is None]
        want = global_json(server, 0, cu_pos)
        assert [json.loads(r["data"]) for r in caught] == want, "catch-up events differ from GET /stream/all"
        assert [int(r["id"]) for r in caught] == [e["position"] for e in want]

        live = append(stub, stream, [event_data("Live", b'{"l":%d}' % i) for i in range(2)])
        live2 = append(stub, stream, [event_data("Live2", b"{}")])
        end = last_position(live2)
        curl_sse.wait(lambda c: c.ids() and c.ids()[-1] >= end, f"live event {end}")
        after = conn.parser.events[len(caught):]
        want_live = global_json(server, cu_pos, end)
        assert [json.loads(r["data"]) for r in after] == want_live, "live events differ from GET /stream/all"
        assert {live.first_position, end} <= {int(r["id"]) for r in after}

        n = len(conn.parser.heartbeats)
        curl_sse.wait(lambda c: len(c.parser.heartbeats) >= n + 2, "two more heartbeats", timeout=10)
        assert len(conn.parser.caught_ups()) == 1, conn.parser.caught_ups()
        check_wellformed(conn, "curl")
        assert not [c for c in conn.parser.comments if c.strip() != "heartbeat"], conn.parser.comments[:5]
    finally:
        curl_sse.close()


# --------------------------------------------------------------------------
# Last-Event-ID
# --------------------------------------------------------------------------

def test_reconnect_with_last_event_id_resumes_exactly(server, stub):
    stream = unique("resume")
    offset = head_after(stub)
    for k in range(3):
        append(stub, stream, [event_data("R", b'{"k":%d,"i":%d}' % (k, i)) for i in range(10)])
    # Small reads, closed after 12 events: the rest of the catch-up is cut off mid-way.
    first = SseConn(server.http_port, all_path(offset=offset), recv_size=256)
    try:
        first.wait(lambda c: len(c.parser.events) >= 12, "12 events")
        check_sse_head(first)
    finally:
        first.close()
    got1 = first.ids()
    last_id = got1[-1]
    end = last_position(append(stub, stream, [event_data("R2", b"{}") for _ in range(10)]))  # while away

    # offset=0 in the URL: the header must win.
    second = SseConn(server.http_port, all_path(offset=0), headers=[("Last-Event-ID", str(last_id))])
    try:
        second.wait(lambda c: c.ids() and c.ids()[-1] >= end, f"event {end}")
        check_sse_head(second)
        check_wellformed(second, "resumed")
    finally:
        second.close()
    got2 = second.ids()
    want = [e["position"] for e in global_json(server, offset, end)]
    assert got2[0] > last_id, f"resumed at {got2[0]}, after Last-Event-ID {last_id}"
    assert got1 + got2 == want, (f"first connection {got1[:3]}..{got1[-3:]}, resumed {got2[:3]}..{got2[-3:]}: "
                                 f"duplicates {sorted(set(got1) & set(got2))[:5]}, "
                                 f"missing {sorted(set(want) - set(got1) - set(got2))[:5]}")


def test_reconnect_stream_with_last_event_id_resumes_at_next_version(server, stub):
    stream = unique("resume-s")
    append(stub, stream, 8, version=0)
    first = SseConn(server.http_port, stream_sub_path(stream, version=0), recv_size=256)
    try:
        first.wait(lambda c: len(c.parser.events) >= 4, "4 events")
    finally:
        first.close()
    got1 = first.ids()
    append(stub, stream, 3, version=8)
    second = SseConn(server.http_port, stream_sub_path(stream, version=0),
                     headers=[("Last-Event-ID", str(got1[-1]))])
    try:
        second.wait(lambda c: c.ids() and c.ids()[-1] >= 10, "version 10")
        check_sse_head(second)
    finally:
        second.close()
    got2 = second.ids()
    assert got2[0] == got1[-1] + 1, f"Last-Event-ID {got1[-1]}: resumed at version {got2[0]}"
    assert got1 + got2 == list(range(11)), (got1, got2)


@pytest.mark.parametrize("pieces", [
    [b"Last-Event-ID: 1", b"5\r\n\r\n"],
    [b"Last-Ev", b"ent-ID: 1", b"5", b"\r\n\r\n"],
    [b"Last-Event-ID:", b" 15 \r\n", b"X-After: 1\r\n\r\n"],
], ids=["value", "name-and-value", "spaces"])
def test_last_event_id_split_across_reads(server, stub, pieces):
    """A Last-Event-ID header whose name or value comes in several reads resumes after the whole id."""
    stream = unique("resume-split")
    append(stub, stream, 20, version=0)
    conn = SseConn(server.http_port, stream_sub_path(stream, version=0), connect=False)
    conn.sock = http_connect(server.http_port)
    try:
        head = request_bytes("GET", conn.path)[:-2]  # the request line and Host, no empty line
        for piece in [head] + pieces:
            conn.sock.sendall(piece)
            wait_server_read(conn.sock, server.http_port)
        conn.wait(lambda c: c.ids() and c.ids()[-1] >= 19, "version 19")
        check_sse_head(conn)
    finally:
        conn.close()
    assert conn.ids() == list(range(16, 20)), f"Last-Event-ID 15 sent in pieces: {conn.ids()}"


def test_too_long_last_event_id_is_400(server, stub):
    """An id longer than any number is refused, not cut short into another one."""
    stream = unique("resume-long")
    append(stub, stream, 3, version=0)
    with http_connect(server.http_port) as sock:
        sock.sendall(request_bytes("GET", stream_sub_path(stream, version=0),
                                   headers=[("Last-Event-ID", "0" * 40 + "1")]))
        # A stream that began instead never ends: the read times out.
        expect_error(Http1Reader(sock).read_response(timeout=10), 400, "INVALID_ARGUMENT")


# --------------------------------------------------------------------------
# One stream
# --------------------------------------------------------------------------

def test_stream_subscription_ids_are_versions(server, stub):
    stream = unique("sse é/x")  # percent-encoded in the path
    other = unique("sse-other")
    append(stub, stream, [event_data(f"T{i}", b'{"i":%d}' % i) for i in range(5)], version=0)
    conn = SseConn(server.http_port, stream_sub_path(stream, version=2))
    try:
        conn.wait(lambda c: c.parser.caught_ups(), "caught_up")
        check_sse_head(conn)
        cu = conn.parser.caught_ups()[0]
        assert json.loads(cu["data"]) == {"version": 5}, cu
        assert conn.ids() == [2, 3, 4], conn.describe()
        for k in range(2):
            append(stub, other, 1)
            append(stub, stream, [event_data("Live", b'{"k":%d}' % k)])
        conn.wait(lambda c: c.ids() and c.ids()[-1] >= 6, "version 6")
        want = http_read_stream(server, stream, version=2)
        assert [json.loads(r["data"]) for r in conn.parser.events] == want
        assert conn.ids() == [e["version"] for e in want] == [2, 3, 4, 5, 6]
        kinds = [r.get("event") or r["id"] for r in conn.parser.records if isinstance(r, dict)]
        assert kinds == ["2", "3", "4", "caught_up", "5", "6"], f"catch-up, caught_up, then live: {kinds}"
        check_wellformed(conn, "stream")
    finally:
        conn.close()
    # A stream that does not exist yet: caught up at once, then its first events.
    later = unique("sse-later")
    conn = SseConn(server.http_port, stream_sub_path(later, version=0))
    try:
        conn.wait(lambda c: c.parser.caught_ups(), "caught_up")
        assert json.loads(conn.parser.caught_ups()[0]["data"]) == {"version": 0}
        append(stub, later, 2, version=0)
        conn.wait(lambda c: len(c.parser.events) >= 2, "2 events")
        assert conn.ids() == [0, 1]
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Filters and checkpoints
# --------------------------------------------------------------------------

def test_filtered_subscription_with_checkpoints(server, stub):
    uid = unique("f").split("-")[1]
    A, B, C = f"A-{uid}", f"B-{uid}", f"C-{uid}"
    P, Q, R = f"p{uid}-", f"q{uid}-", f"r{uid}-"
    offset = head_after(stub)
    types, prefixes = [A, B], [P, Q]

    def matches(e):
        return e["type"] in types and any(e["stream"].startswith(p) for p in prefixes)

    def mix(n):
        last = 0
        for i in range(n):
            last = last_position(append(stub, [P, Q, R][i % 3] + str(i % 2),
                                        [event_data([A, B, C][(i // 3) % 3], b"{}")]))
        return last

    mix(18)
    path = all_path(offset=offset, types=",".join(types), prefixes=",".join(urllib.parse.quote(p) for p in prefixes))
    conn = SseConn(server.http_port, path)
    try:
        conn.wait(lambda c: c.parser.caught_ups(), "caught_up")
        check_sse_head(conn)
        end = mix(18)
        sentinel = last_position(append(stub, P + "end", [event_data(A)]))
        conn.wait(lambda c: c.ids() and c.ids()[-1] >= sentinel, f"event {sentinel}")
        # Then only non-matching events: checkpoints keep coming, up to the head.
        heads = []
        for rnd in range(3):
            heads.append(last_position(append(stub, R + "x", [event_data(C, b"{}") for _ in range(3)])))
            conn.wait(lambda c: c.parser.checkpoints() and
                      int(json.loads(c.parser.checkpoints()[-1]["data"])["position"]) >= heads[-1],
                      f"a checkpoint at {heads[-1]}")
        check_wellformed(conn, "filtered")
    finally:
        conn.close()
    log = global_json(server, offset, heads[-1])
    want = [e for e in log if matches(e)]
    assert len(want) >= 4 and end < sentinel
    assert [json.loads(r["data"]) for r in conn.parser.events] == want, \
        f"filtered events: ids {conn.ids()}, want {[e['position'] for e in want]}"
    assert conn.ids() == [e["position"] for e in want]

    delivered, prev, cps = 0, None, []
    want_pos = [e["position"] for e in want]
    for rec in conn.parser.records:
        if isinstance(rec, tuple):
            continue
        if rec.get("event") is None:
            delivered += 1
        elif rec["event"] == "checkpoint":
            data = json.loads(rec["data"])
            assert set(data) == {"position"} and rec.get("id") == str(data["position"]), \
                f"a checkpoint is event: checkpoint, id: <position>, data: {{\"position\":N}}: {rec}"
            p = data["position"]
            assert offset <= p <= heads[-1], f"checkpoint {p} outside [{offset}, {heads[-1]}]"
            assert prev is None or p >= prev, f"checkpoint went back from {prev} to {p}"
            needed = sum(1 for q in want_pos if q <= p)
            assert delivered >= needed, f"checkpoint {p} after {delivered} events; {needed} matching are <= it"
            prev = p
            cps.append(p)
    assert cps and cps[-1] == heads[-1], f"checkpoints {cps[-5:]}, head {heads[-1]}"
    assert len(set(cps)) >= 3, f"checkpoints do not advance with the non-matching rounds: {cps}"


# --------------------------------------------------------------------------
# 1,000 idle subscriptions
# --------------------------------------------------------------------------

def test_many_idle_subscriptions(tmp_path_factory, pb, pb_grpc, request):
    """
    N_CONNECTIONS subscriptions held open on raw sockets served by one selector.
    Each gets caught_up, then every one of 5 new events, then a heartbeat; the
    gauge shows them all, then 0 once closed. Memory: VmRSS less the LMDB map's
    file pages grows by at most 128 KiB per idle subscription (a connection and a
    subscription in a few KiB, plus generous room for ASan's redzones; a server
    that set aside its 1 MiB SUBSCRIPTION_BUFFER per subscriber up front fails).
    """
    n = N_CONNECTIONS
    limit = raise_nofile(n + 512)  # before the server starts: it inherits the limit
    if limit < n + 100:
        pytest.skip(f"RLIMIT_NOFILE is {limit}, {n} subscriptions need more")
    factory = ServerFactory(tmp_path_factory, "sse-many", request.session)
    conns = []
    sel = selectors.DefaultSelector()
    try:
        s = factory.new(env={"SSE_HEARTBEAT_MS": "1000"})
        wait_http_ready(s)
        wait_prom_ready(s)
        stub = s.stub()
        offset = head_after(stub)
        base_mem, base_fields = server_memory(s)
        path = all_path(offset=offset)
        t0 = time.monotonic()
        for i in range(n):
            c = SseConn(s.http_port, path)
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
            conns.append(c)
            if i % 100 == 99:
                pump_all(sel, conns, lambda c: True, "", timeout=0)  # keep up with what arrived

        def wait_all(pred, what, timeout):
            pump_all(sel, conns, pred, what, timeout)

        wait_all(lambda c: c.parser.caught_ups(), "caught_up", 60)
        opened = time.monotonic() - t0
        for c in conns:
            check_sse_head(c)
        poll(lambda: scrape(s)[1].value(GAUGE, transport="http") == n, timeout=15, interval=0.1,
             what=f'{GAUGE}{{transport="http"}} == {n}')
        mem, fields = server_memory(s)
        growth = mem - base_mem
        assert growth <= n * 128 * 1024, (f"{n} idle subscriptions: memory grew {growth / MIB:.1f} MiB "
                                          f"({growth / n / 1024:.0f} KiB each); before {base_fields}, now {fields}")

        stream = unique("fanout")
        positions = []
        for i in range(5):
            positions.append(append(stub, stream, [event_data("Fan", b'{"i":%d}' % i)]).first_position)
        t1 = time.monotonic()
        wait_all(lambda c: len(c.parser.events) >= 5, "the 5 new events", 60)
        fanout = time.monotonic() - t1
        for c in conns:
            assert c.ids() == positions, f"{c.sock.getsockname()}: ids {c.ids()}, want {positions}"
            assert json.loads(c.parser.events[0]["data"])["stream"] == stream
        wait_all(lambda c: len(c.parser.heartbeats) >= 1, "a heartbeat (SSE_HEARTBEAT_MS=1000)", 15)
        assert not [c for c in conns if c.closed], "subscriptions closed by the server"
        assert scrape(s)[1].value(GAUGE, transport="http") == n
        print(f"\n{n} SSE subscriptions: open + caught_up in {opened:.1f} s, 5 events to all in {fanout:.1f} s, "
              f"memory +{growth / MIB:.1f} MiB")
    finally:
        for c in conns:
            c.close()
        sel.close()
    try:
        poll(lambda: scrape(s)[1].value(GAUGE, transport="http") == 0, timeout=20, interval=0.1,
             what=f'{GAUGE}{{transport="http"}} back to 0 after closing every subscription')
    finally:
        factory.finish()


def pump_all(sel, conns, pred, what, timeout):
    """Reads every ready socket (one selector) until pred holds for every connection; bounded."""
    deadline = time.monotonic() + timeout
    pending = [c for c in conns if not pred(c)]
    while True:
        for key, _ in sel.select(timeout=0 if timeout == 0 else max(0.0, min(0.2, deadline - time.monotonic()))):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            c.feed(data)
            if not data:
                sel.unregister(c.sock)
        if timeout == 0:
            return
        pending = [c for c in pending if not pred(c)]
        if not pending:
            return
        closed = [c for c in conns if c.closed or c.status not in (None, 200)]
        if closed or time.monotonic() >= deadline:
            sample = pending[0]
            raise AssertionError(f"{len(pending)} of {len(conns)} subscriptions without {what} "
                                 f"({len(closed)} closed by the server) after {timeout:.0f} s; "
                                 f"one of them: {(closed or [sample])[0].describe()}")


# --------------------------------------------------------------------------
# A store that cannot be read
# --------------------------------------------------------------------------

def test_a_stream_that_cannot_be_read_ends_with_a_failed_event(server_factory):
    """The subscription says why it ends (event: failed, the HTTP errors' JSON), then ends."""
    s = server_factory.new(env={"SHARDS": "1"})
    damaged = unique("damaged")
    append(s.stub(), damaged, 3)
    s.stop()
    move_first_stream_run(s.data_dir)
    s.start()
    wait_http_ready(s)
    check_ends_with_failed(s, stream_sub_path(damaged, version=0), "INTERNAL")


def test_an_event_that_does_not_decode_ends_with_internal(server_factory):
    """A stored event damaged on disk is the server's fault (INTERNAL), not a lack of memory."""
    s = server_factory.new(env={"SHARDS": "1"})
    stream = unique("undecodable")
    data = os.urandom(100).hex().encode()  # 200 bytes, found once in the log
    append(s.stub(), stream, [event_data(data=data)])
    s.stop()
    damage_stored_data(s.data_dir, data)
    s.start()
    wait_http_ready(s)
    check_ends_with_failed(s, stream_sub_path(stream, version=0), "INTERNAL")


def check_ends_with_failed(s, path, code):
    """The subscription at path ends at once, before any event, with one event: failed of code."""
    conn = SseConn(s.http_port, path)
    try:
        conn.wait(lambda c: c.chunked is not None and c.chunked.ended, "the last chunk")
        check_sse_head(conn)
        check_wellformed(conn, path)
        assert conn.parser.events == [], conn.describe()
        errors = [r for r in conn.parser.special if r.get("event") == "failed"]
        assert len(errors) == 1, conn.describe()
        body = json.loads(errors[0]["data"])
        assert body["code"] == code, body
        assert body["error"].startswith("the subscription ended:"), body
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Bad queries, h2c
# --------------------------------------------------------------------------

BAD_QUERIES = [
    all_path(offset="abc"), all_path(offset="-1"), all_path(offset="1.5"), all_path(offset="0x10"),
    all_path(offset="18446744073709551616"),
    stream_sub_path("some-stream", version="abc"), stream_sub_path("some-stream", version="-1"),
    stream_sub_path("some-stream", version="4294967296"), stream_sub_path("some-stream", version="1.5"),
]


@pytest.mark.parametrize("path", BAD_QUERIES)
def test_bad_query_is_400_json(server, path):
    try:
        r = http_request(server.http_port, "GET", path, timeout=10)
    except socket.timeout:
        pytest.fail(f"GET {path}: no complete response in 10 s (streaming instead of 400?)")
    expect_error(r, 400, "INVALID_ARGUMENT")
    assert not r.content_type.startswith("text/event-stream"), r


@pytest.mark.parametrize("path", [all_path(offset=0), stream_sub_path("h2c-stream", version=0)])
def test_h2c_subscription_is_501(server, path):
    with RawH2(server.http_port) as raw:
        sid = raw.request("GET", path)
        r = raw.response(sid, timeout=10)
    assert r.http_status == 501, f"h2c GET {path}: {r!r}"
    r2 = curl(f"http://{HOST}:{server.http_port}{path}", http2=True, timeout=10)
    assert r2.version == "2" and r2.status == 501, r2


# --------------------------------------------------------------------------
# Clients that go away
# --------------------------------------------------------------------------

def test_disconnect_mid_stream_frees_subscriptions(server_factory):
    """
    Clients that go away while their catch-up is still being written (a plain close
    with unread data, which makes the kernel send a reset, or SO_LINGER 0): the
    server goes on, and every such subscription is freed (the gauge goes back to 0).
    Its own server, last in the file: a crash here does not take the others down.
    """
    import struct
    server = server_factory.new()
    wait_http_ready(server)
    wait_prom_ready(server)
    stub = server.stub()
    stream = unique("bulk")
    for _ in range(10):
        append(stub, stream, [event_data("Bulk", b"x" * 300) for _ in range(200)])

    def died(after):
        try:
            server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return
        pytest.fail(f"the server died ({server.proc.returncode}) after {after}:\n{server.stderr_tail(30)}",
                    pytrace=False)

    for i in range(40):
        conn = SseConn(server.http_port, all_path(offset=0), recv_size=4096)
        try:
            conn.wait(lambda c: len(c.parser.events) >= 5, "5 events")
        except AssertionError:
            died(f"client {i - 1} closed its SSE connection mid catch-up "
                 f"({'SO_LINGER 0' if (i - 1) % 2 else 'close with unread data'})")
            raise
        finally:
            if i % 2:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
    poll(lambda: not server.alive() or scrape(server)[1].value(GAUGE, transport="http") == 0, timeout=15,
         interval=0.05, what=f'{GAUGE}{{transport="http"}} back to 0')
    if not server.alive():
        died("the last clients closed their SSE connections mid catch-up")
    conn = SseConn(server.http_port, all_path(offset=0))
    try:
        conn.wait(lambda c: c.parser.caught_ups(), "caught_up after the disconnects")
    finally:
        conn.close()
