"""
The HTTP/JSON API on HTTP_PORT, against the real server binary: every route
over HTTP/1.1 (Python's http.client, curl, raw sockets) and over h2c (curl
--http2-prior-knowledge, python3-h2), the JSON mapping of the proto's
messages, every error status, appends over one transport read back over the
other (gRPC), percent-encoded stream names, keep-alive, pipelining, page
sizes, storage full and shutdown. One server for the module (SHARDS=2,
SYNC=none) unless a test needs its own; every test uses its own stream names.
"""

import base64
import json
import os
import re
import signal
import socket
import threading
import time
import uuid

import pytest

from conftest import (
    API, DEFAULT_MAX_MESSAGE, HOST, MIB, PAGE_SIZE, RPC_TIMEOUT, STOP_TIMEOUT, UUID7_RE,
    Http1Reader, KeepAlive, RawH2, append, b64, connection_refused, curl, curl_many,
    event_count, event_data, expect_error, expect_ok, http_append, http_connect,
    http_get, http_read_global, http_read_stream, http_request, json_body,
    list_streams, now_ms, poll, quote_name, read_global, read_stream, read_stream_all, request_bytes,
    send_then_read, server_version, stream_count, stream_path, unique, unb64, wait_global,
    wait_http_ready, wait_server_read, failing_sends_env, raw_frames_until_closed, scrape,
)

CLOCK_SLACK_MS = 5 * 60 * 1000
EVENT_KEYS = {"id", "stream", "version", "type", "data", "metadata", "causation_id",
              "correlation_id", "added_at", "position"}


def url(server, path):
    return f"http://{HOST}:{server.http_port}{path}"


def grpc_event_as_json(e):
    """What the HTTP API must show for a gRPC Event: proto names, base64, empty strings/bytes omitted."""
    out = {"id": e.id, "stream": e.stream, "version": e.version, "type": e.type,
           "causation_id": e.causation_id, "correlation_id": e.correlation_id,
           "added_at": e.added_at, "position": e.position}
    if e.data:
        out["data"] = b64(e.data)
    if e.metadata:
        out["metadata"] = b64(e.metadata)
    return {k: v for k, v in out.items() if v != ""}


def check_event_json(ev):
    """Shape of one event in JSON: known keys only, numbers as JSON integers."""
    assert set(ev) <= EVENT_KEYS, f"unexpected keys {set(ev) - EVENT_KEYS} in {ev}"
    for k in ("id", "stream", "type", "causation_id", "correlation_id"):
        assert isinstance(ev.get(k), str) and ev[k], f"{k} missing or empty in {ev}"
    for k in ("version", "added_at", "position"):
        assert type(ev.get(k)) is int, f"{k} must be a JSON integer in {ev}"
    for k in ("data", "metadata"):
        if k in ev:
            assert isinstance(ev[k], str) and ev[k], f"{k} present but empty in {ev}"
            assert base64.b64encode(base64.b64decode(ev[k], validate=True)).decode() == ev[k], \
                f"{k} is not standard padded base64: {ev[k]!r}"


def same_conn_serves(conn, server):
    """The kept-alive connection still answers."""
    assert expect_ok(conn.get(f"{API}/version"))["version"]


# ---- simple routes -------------------------------------------------------------------------

def test_version_matches_grpc(http_server, stub):
    r = http_get(http_server, f"{API}/version")
    body = expect_ok(r)
    assert body == {"version": server_version(stub)}, r


def test_uptime(http_server):
    first = expect_ok(http_get(http_server, f"{API}/uptime"))
    assert set(first) == {"uptime", "uptime_human"}, first
    assert type(first["uptime"]) is int and first["uptime"] >= 0, first
    assert isinstance(first["uptime_human"], str) and first["uptime_human"].strip(), first
    since_spawn_ms = (time.monotonic() - http_server.spawned_at) * 1000
    assert first["uptime"] <= since_spawn_ms + 1000, \
        f"uptime {first['uptime']} ms but the process was started {since_spawn_ms:.0f} ms ago"
    later = poll(lambda: (lambda u: u if u["uptime"] > first["uptime"] else None)(
        expect_ok(http_get(http_server, f"{API}/uptime"))), timeout=5, interval=0.01,
        what="uptime to grow")
    assert later["uptime"] > first["uptime"]


def test_health_and_readiness(http_server):
    assert http_get(http_server, "/healthz").status == 200
    assert http_get(http_server, "/readyz").status == 200


def test_empty_store_zero_counts_and_empty_lists(server_factory):
    s = wait_http_ready(server_factory.new())
    assert expect_ok(http_get(s, f"{API}/stream/count")) == {"count": 0}
    assert expect_ok(http_get(s, f"{API}/event/count")) == {"count": 0}
    assert expect_ok(http_get(s, f"{API}/stream")) == {"streams": []}
    assert expect_ok(http_get(s, f"{API}/stream/all")) == {"events": [], "checkpoint": 0}
    assert expect_ok(http_get(s, f"{API}/stream/all?offset=5")) == {"events": [], "checkpoint": 5}
    assert expect_ok(http_get(s, stream_path("nothing-here"))) == {"events": []}


# ---- appends and the JSON mapping ------------------------------------------------------------

def test_append_then_read_back_json_shape(http_server, stub, pb):
    stream = unique("order")
    client_id, cause, corr = str(uuid.uuid4()), str(uuid.uuid4()).upper(), str(uuid.uuid4())
    sent = [
        {"type": "OrderPlaced", "data": b'{"total":12}', "metadata": b'{"user":"u1"}'},
        {"type": "ItemAdded", "data": b"\x00\x01\x02\xff\xfb\xef", "id": client_id,
         "causation_id": cause, "correlation_id": corr},
        {"type": "OrderShipped", "metadata": b"\xfe"},  # no data at all
        {"type": "Empty", "data": ""},  # empty base64 is empty bytes
    ]
    before = now_ms()
    r = http_append(http_server, stream, sent, version=0)
    after = now_ms()
    ack = expect_ok(r)
    assert set(ack) == {"events", "first_version", "first_position"}, ack
    assert ack["first_version"] == 0 and type(ack["first_version"]) is int, ack
    assert type(ack["first_position"]) is int and ack["first_position"] >= 1, ack
    assert len(ack["events"]) == 4 and ack["events"][1] == client_id, ack
    for i in (0, 2, 3):
        assert UUID7_RE.match(ack["events"][i]), f"generated id {ack['events'][i]!r} is not a UUIDv7"

    events = http_read_stream(http_server, stream)
    assert len(events) == 4
    for i, (ev, s) in enumerate(zip(events, sent)):
        check_event_json(ev)
        assert ev["id"] == ack["events"][i]
        assert ev["stream"] == stream and ev["type"] == s["type"]
        assert ev["version"] == i, "version 0 must be present (numbers always present)"
        assert ev["position"] == ack["first_position"] + i
        assert before - CLOCK_SLACK_MS <= ev["added_at"] <= after + CLOCK_SLACK_MS
        for k in ("data", "metadata"):
            want = s.get(k) or b""
            if want:
                assert ev[k] == b64(want), f"{k} of event {i}: {ev}"
            else:
                assert k not in ev, f"empty {k} must be omitted: {ev}"
    assert events[0]["causation_id"] == events[0]["id"] == events[0]["correlation_id"]
    assert events[1]["causation_id"] == cause.lower() and events[1]["correlation_id"] == corr

    # GET /api/v1/event/{id}: the very same object, any case of the id.
    for ev in events:
        assert expect_ok(http_get(http_server, f"{API}/event/{ev['id']}")) == ev
    assert expect_ok(http_get(http_server, f"{API}/event/{events[0]['id'].upper()}")) == events[0]

    # The global stream from just before the first one holds them, in order.
    wait_global(stub, ack["first_position"] + 3)
    page = http_read_global(http_server, offset=ack["first_position"] - 1, limit=4)
    assert set(page) == {"events", "checkpoint"}
    assert page["events"] == events
    assert page["checkpoint"] == ack["first_position"] + 3


def test_unicode_in_json_bodies(http_server, stub):
    stream = "compte-été-🚀-" + uuid.uuid4().hex[:8]
    # Raw UTF-8 in the JSON text, and \\u escapes (with a surrogate pair) for the same text.
    body_raw = json.dumps({"version": 0, "events": [{"type": "Ouvert-é🚀", "data": b64(b"x")}]},
                          ensure_ascii=False).encode()
    r = http_request(http_server.http_port, "POST", stream_path(stream), body=body_raw)
    expect_ok(r)
    body_esc = json.dumps({"version": 1, "events": [{"type": "Ouvert-é🚀"}]}, ensure_ascii=True).encode()
    assert b"\\ud83d\\ude80" in body_esc
    expect_ok(http_request(http_server.http_port, "POST", stream_path(stream), body=body_esc))
    got = read_stream(stub, stream)
    assert [e.type for e in got] == ["Ouvert-é🚀"] * 2
    events = http_read_stream(http_server, stream)
    assert [e["type"] for e in events] == ["Ouvert-é🚀"] * 2
    assert all(e["stream"] == stream for e in events)


def test_version_absent_means_zero(http_server, stub):
    stream = unique("v0")
    ack = expect_ok(http_append(http_server, stream, [{"type": "A"}]))  # no "version": 0, a new stream
    assert ack["first_version"] == 0
    msg = expect_error(http_append(http_server, stream, [{"type": "B"}]), 409, "ABORTED")
    assert re.search(r"\b0\b", msg) and re.search(r"\b1\b", msg), \
        f"409 message should name expected 0 and actual 1: {msg!r}"
    ack = expect_ok(http_append(http_server, stream, [{"type": "C"}], version=-1))
    assert ack["first_version"] == 1
    ack = expect_ok(http_append(http_server, stream, [{"type": "D"}, {"type": "E"}], version=2))
    assert ack["first_version"] == 2
    assert [e.type for e in read_stream(stub, stream)] == ["A", "C", "D", "E"]


@pytest.mark.parametrize("variant", ["standard padded", "standard unpadded", "url-safe padded",
                                     "url-safe unpadded"])
def test_base64_input_variants(http_server, stub, variant):
    stream = unique("b64")
    # Lengths 1..6 (every padding case) of bytes whose base64 has + and /.
    blobs = [bytes([0xfb, 0xff, 0xbf, 0xfe, 0x3e, 0x3f][:n]) for n in range(1, 7)]
    enc = base64.urlsafe_b64encode if variant.startswith("url") else base64.b64encode
    texts = [enc(b).decode() for b in blobs]
    if variant.endswith("unpadded"):
        texts = [t.rstrip("=") for t in texts]
    assert any(("-" in t or "_" in t) if variant.startswith("url") else ("+" in t or "/" in t) for t in texts)
    events = [{"type": "B", "data": t, "metadata": t} for t in texts]
    expect_ok(http_append(http_server, stream, events, version=0))
    got = read_stream(stub, stream)
    assert [e.data for e in got] == blobs
    assert [e.metadata for e in got] == blobs
    out = http_read_stream(http_server, stream)
    assert [e["data"] for e in out] == [base64.b64encode(b).decode() for b in blobs], \
        "output must be standard base64 with padding"


def test_append_over_http_read_over_grpc(http_server, stub, pb):
    stream = unique("h2g")
    data = bytes(range(256)) * 4
    ids = [str(uuid.uuid4()) for _ in range(2)]
    ack = expect_ok(http_append(http_server, stream, [
        {"type": "First", "data": data, "metadata": b"\x00meta\xff", "id": ids[0]},
        {"type": "Second", "data": b"{}", "id": ids[1], "causation_id": ids[0]},
        {"type": "Third"},
    ], version=0))
    got = read_stream(stub, stream)
    assert [e.id for e in got] == ack["events"] and ack["events"][:2] == ids
    assert [e.version for e in got] == [0, 1, 2]
    assert [e.position for e in got] == [ack["first_position"] + i for i in range(3)]
    assert got[0].data == data and got[0].metadata == b"\x00meta\xff"
    assert got[1].data == b"{}" and got[1].causation_id == ids[0] and got[1].correlation_id == ids[1]
    assert got[2].data == b"" and got[2].metadata == b""
    # And every field the HTTP API shows equals what gRPC shows.
    assert http_read_stream(http_server, stream) == [grpc_event_as_json(e) for e in got]
    for e in got:
        assert stub.GetEvent(pb.GetEventRequest(id=e.id), timeout=RPC_TIMEOUT) == e
    wait_global(stub, ack["first_position"] + 2)
    g = read_global(stub, ack["first_position"] - 1, 3)
    assert list(g.events) == got


def test_append_over_grpc_read_over_http(http_server, stub):
    stream = unique("g2h")
    events = [event_data("Opened", b"\xff\xfe\x00binary", b'{"m":1}'),
              event_data("Renamed", b"", b"", id=str(uuid.uuid4()), correlation_id=str(uuid.uuid4())),
              event_data("Closed", "données ✓".encode())]
    r = append(stub, stream, events, version=0)
    got = read_stream(stub, stream)
    want = [grpc_event_as_json(e) for e in got]
    out = http_read_stream(http_server, stream)
    assert out == want
    for ev in out:
        check_event_json(ev)
    assert unb64(out[0]["data"]) == b"\xff\xfe\x00binary" and unb64(out[0]["metadata"]) == b'{"m":1}'
    assert "data" not in out[1] and "metadata" not in out[1]
    assert [ev["position"] for ev in out] == [r.first_position + i for i in range(3)]
    assert [ev["id"] for ev in out] == list(r.events)
    for e in got:
        assert expect_ok(http_get(http_server, f"{API}/event/{e.id}")) == grpc_event_as_json(e)
    wait_global(stub, r.first_position + 2)
    page = http_read_global(http_server, offset=r.first_position - 1, limit=3)
    assert page["events"] == want and page["checkpoint"] == r.first_position + 2


def test_body_stream_field_does_not_decide(http_server, stub):
    path_stream, body_stream = unique("path"), unique("body")
    r = http_append(http_server, path_stream, [{"type": "X"}], version=0, extra={"stream": body_stream})
    if r.status == 200:
        assert len(read_stream(stub, path_stream)) == 1, "a 200 append must land in the path's stream"
    else:
        expect_error(r, 400, "INVALID_ARGUMENT")
        assert read_stream(stub, path_stream) == []
    assert read_stream(stub, body_stream) == [], "the body's stream field must not decide"
    # The same name in the body as in the path is fine either way.
    same = unique("same")
    expect_ok(http_append(http_server, same, [{"type": "X"}], version=0, extra={"stream": same}))
    assert len(read_stream(stub, same)) == 1


def test_chunked_append_body(http_server, stub):
    stream = unique("chunked")
    body = json_body({"version": 0, "events": [{"type": "C%d" % i, "data": b64(b"x" * i)} for i in range(20)]})
    parts = [body[i:i + 37] for i in range(0, len(body), 37)]
    r = http_request(http_server.http_port, "POST", stream_path(stream), body=iter(parts))
    ack = expect_ok(r)
    assert ack["first_version"] == 0 and len(ack["events"]) == 20
    assert [e.data for e in read_stream(stub, stream)] == [b"x" * i for i in range(20)]


# ---- percent-encoded stream names --------------------------------------------------------------

NAMES = ["a/b c+d é", "q?x#y%z&k=v;p", "plus+sign", "ünïcødé-🚀", "slash/", "%41", " lead", "dot.", "~tilde"]


@pytest.mark.parametrize("base", NAMES, ids=range(len(NAMES)))
def test_percent_encoded_stream_names(http_server, stub, base):
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    path = f"{API}/stream/{quote_name(name)}"
    ack = expect_ok(http_request(http_server.http_port, "POST", path,
                                 body={"version": 0, "events": [{"type": "T", "data": b64(b"1")}]}))
    got = read_stream(stub, name)
    assert len(got) == 1 and got[0].stream == name, f"POST {path} did not write stream {name!r}"
    assert got[0].id == ack["events"][0]
    out = expect_ok(http_get(http_server, path))["events"]
    assert [e["stream"] for e in out] == [name]
    out = expect_ok(http_get(http_server, path + "?version=0&limit=1"))["events"]
    assert [e["id"] for e in out] == ack["events"]
    assert expect_ok(http_get(http_server, f"{API}/event/{ack['events'][0]}"))["stream"] == name


def test_plus_is_a_plus_and_hex_case_does_not_matter(http_server, stub):
    tag = uuid.uuid4().hex[:6]
    expect_ok(http_request(http_server.http_port, "POST", f"{API}/stream/x+y-{tag}",
                           body={"version": 0, "events": [{"type": "T"}]}))
    assert len(read_stream(stub, f"x+y-{tag}")) == 1, "a raw + in the path is a plus"
    assert read_stream(stub, f"x y-{tag}") == []
    name = f"é-{tag}"
    expect_ok(http_request(http_server.http_port, "POST", f"{API}/stream/%c3%a9-{tag}",
                           body={"version": 0, "events": [{"type": "T"}]}))
    assert len(read_stream(stub, name)) == 1, "lowercase percent-encoding decodes too"
    assert len(expect_ok(http_get(http_server, f"{API}/stream/%C3%A9-{tag}"))["events"]) == 1


def test_nul_in_a_stream_name_is_refused_or_kept_whole(http_server, stub, pb):
    """%00 decodes to U+0000: a 400, or a stream of exactly that name; never a write to the name cut at the NUL."""
    prefix = unique("nul")
    path = f"{API}/stream/{prefix}%00tail"
    r = http_request(http_server.http_port, "POST", path, body={"version": -1, "events": [{"type": "T"}]})
    if r.status == 200:
        eid = expect_ok(r)["events"][0]
        ev = expect_ok(http_get(http_server, f"{API}/event/{eid}"))
        assert ev["stream"] == prefix + "\x00tail", f"the event landed in stream {ev['stream']!r}"
    else:
        expect_error(r, 400, "INVALID_ARGUMENT")
    assert read_stream(stub, prefix) == [], f"POST {path} wrote to stream {prefix!r}, the name cut at the NUL"
    assert http_read_stream(http_server, prefix) == []


def test_stream_name_limits_over_http(http_server, stub):
    name = unique("n")
    name += "é" * ((200 - len(name)) // 2)
    name += "x" * (200 - len(name.encode()))
    assert len(name.encode()) == 200
    expect_ok(http_append(http_server, name, [{"type": "T"}], version=0))
    assert read_stream(stub, name)[0].stream == name
    count = event_count(stub)
    for bad in [name + "x", "$x", "$"]:
        expect_error(http_append(http_server, bad, [{"type": "T"}]), 400, "INVALID_ARGUMENT")
    for raw in ["%zz", "%ff", "%E9", "%C3", "abc%", "abc%4"]:
        r = http_request(http_server.http_port, "POST", f"{API}/stream/{raw}",
                         body={"version": 0, "events": [{"type": "T"}]})
        expect_error(r, 400, "INVALID_ARGUMENT")
        expect_error(http_get(http_server, f"{API}/stream/{raw}"), 400, "INVALID_ARGUMENT")
    assert event_count(stub) == count


# ---- reads: query parameters, pages, counts, lists ---------------------------------------------

def test_read_stream_version_and_limit(http_server, stub):
    stream = unique("page")
    append(stub, stream, 10, version=0)
    versions = lambda **q: [e["version"] for e in http_read_stream(http_server, stream, **q)]  # noqa: E731
    assert versions() == list(range(10))
    assert versions(version=4, limit=3) == [4, 5, 6]
    assert versions(version=7) == [7, 8, 9]
    assert versions(limit=1) == [0]
    assert versions(limit=0) == list(range(10))
    assert versions(version=10) == []
    assert versions(version=4294967295) == []


def test_global_stream_offset_and_limit(http_server, stub):
    stream = unique("glob")
    r = append(stub, stream, 5)
    wait_global(stub, r.first_position + 4)
    start = r.first_position - 1
    page = http_read_global(http_server, offset=start, limit=3)
    assert [e["position"] for e in page["events"]] == [start + 1, start + 2, start + 3]
    assert page["checkpoint"] == start + 3
    assert all(type(e["position"]) is int for e in page["events"])
    page2 = http_read_global(http_server, offset=page["checkpoint"], limit=2)
    assert [e["id"] for e in page2["events"]] == list(r.events[3:5])
    # Offset is exclusive; the same events as gRPC, field by field.
    g = read_global(stub, start, 5)
    assert http_read_global(http_server, offset=start, limit=5)["events"] == \
        [grpc_event_as_json(e) for e in g.events]
    # Beyond the end: empty, and the checkpoint is the offset.
    far = r.first_position + 10 ** 9
    assert http_read_global(http_server, offset=far) == {"events": [], "checkpoint": far}
    # 64-bit offsets are fine.
    big = 2 ** 64 - 1
    assert http_read_global(http_server, offset=big) == {"events": [], "checkpoint": big}


def test_counts_match_grpc(http_server, stub):
    append(stub, unique("cnt"), 3)
    events = expect_ok(http_get(http_server, f"{API}/event/count"))
    streams = expect_ok(http_get(http_server, f"{API}/stream/count"))
    assert events == {"count": event_count(stub)}
    assert streams == {"count": stream_count(stub)}
    assert type(events["count"]) is int and events["count"] >= 3
    before = events["count"]
    expect_ok(http_append(http_server, unique("cnt"), [{"type": "T"}] * 4))
    assert expect_ok(http_get(http_server, f"{API}/event/count"))["count"] == before + 4


def test_list_streams_offset_skip_limit(http_server, stub):
    for i in range(5):
        append(stub, unique(f"list{i}"), 1)
    total = stream_count(stub)
    listed = expect_ok(http_get(http_server, f"{API}/stream"))["streams"]
    assert listed == list_streams(stub), "GET /api/v1/stream equals ListStreams"
    assert len(listed) == min(total, PAGE_SIZE)
    for skip, limit in [(0, 2), (1, 3), (3, 0), (total, 5), (total - 1, 5)]:
        want = list_streams(stub, skip=skip, limit=limit)
        got = expect_ok(http_get(http_server, f"{API}/stream?offset={skip}&limit={limit}"))
        assert got == {"streams": want}, (skip, limit)
        got = expect_ok(http_get(http_server, f"{API}/stream?skip={skip}&limit={limit}"))
        assert got == {"streams": want}, f"skip is a synonym of offset: skip={skip}"


def test_pages_follow_page_size(http_server, stub):
    stream = unique("big")
    r = append(stub, stream, PAGE_SIZE + 50)
    n = lambda **q: len(http_read_stream(http_server, stream, **q))  # noqa: E731
    assert n() == PAGE_SIZE
    assert n(limit=0) == PAGE_SIZE
    assert n(limit=PAGE_SIZE + 1) == PAGE_SIZE
    assert n(limit=2 ** 32 - 1) == PAGE_SIZE
    assert n(version=PAGE_SIZE) == 50
    assert n(version=3, limit=PAGE_SIZE) == PAGE_SIZE
    wait_global(stub, r.first_position + PAGE_SIZE + 49)
    page = http_read_global(http_server, offset=r.first_position - 1, limit=5 * PAGE_SIZE)
    assert len(page["events"]) == PAGE_SIZE, "a full page of the global stream"
    page = http_read_global(http_server, offset=r.first_position - 1)
    assert len(page["events"]) == PAGE_SIZE
    assert page["checkpoint"] == r.first_position - 1 + PAGE_SIZE


# ---- errors ------------------------------------------------------------------------------

BAD_QUERIES = [
    "/stream?limit=abc", "/stream?offset=-1", "/stream?skip=-1", "/stream?limit=-1",
    "/stream?offset=1x", "/stream?offset=99999999999999999999999",
    "/stream/all?offset=-1", "/stream/all?offset=abc", "/stream/all?limit=abc",
    "/stream/all?limit=-5", "/stream/all?offset=18446744073709551616", "/stream/all?offset=0x10",
    "/stream/some-stream?version=abc", "/stream/some-stream?version=-1",
    "/stream/some-stream?limit=abc", "/stream/some-stream?limit=-1", "/stream/some-stream?version=1.5",
    "/stream/some-stream?version=99999999999999999999",
]


@pytest.mark.parametrize("path", BAD_QUERIES)
def test_bad_query_values_are_400(http_server, path):
    with KeepAlive(http_server.http_port) as conn:
        expect_error(conn.get(API + path), 400, "INVALID_ARGUMENT")
        same_conn_serves(conn, http_server)


def _bad_bodies():
    ok = {"type": "T", "data": b64(b"x")}
    u = str(uuid.uuid4())
    return {
        "malformed JSON": b'{"version": 0, "events": [',
        "trailing garbage": b'{"version": 0, "events": [{"type": "T"}]} x',
        "empty body": b"",
        "not an object": b'[{"type": "T"}]',
        "null": b"null",
        "a string": b'"x"',
        "unknown top-level field": {"version": 0, "events": [ok], "bogus_field": 1},
        "unknown event field": {"version": 0, "events": [{"type": "T", "dataa": b64(b"x")}]},
        "events not a list": {"version": 0, "events": {"type": "T"}},
        "event not an object": {"version": 0, "events": ["T"]},
        "version a string": {"version": "0", "events": [ok]},
        "version a float": {"version": 1.5, "events": [ok]},
        "version over int32": {"version": 2 ** 31, "events": [ok]},
        "version -2": {"version": -2, "events": [ok]},
        "version true": {"version": True, "events": [ok]},
        "data not base64": {"version": 0, "events": [{"type": "T", "data": "@@@!"}]},
        "data a number": {"version": 0, "events": [{"type": "T", "data": 12}]},
        "type a number": {"version": 0, "events": [{"type": 12}]},
        "empty type": {"version": 0, "events": [{"type": ""}]},
        "missing type": {"version": 0, "events": [{"data": b64(b"x")}]},
        "type 201 bytes": {"version": 0, "events": [{"type": "t" * 201}]},
        "bad id": {"version": 0, "events": [{"type": "T", "id": "not-a-uuid"}]},
        "bad causation_id": {"version": 0, "events": [{"type": "T", "causation_id": "1234"}]},
        "duplicate ids": {"version": 0, "events": [{"type": "T", "id": u}, {"type": "T", "id": u}]},
        "no events": {"version": 0, "events": []},
        "events absent": {"version": 0},
        "events null": {"version": 0, "events": None},
    }


BAD_BODIES = _bad_bodies()


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_append_bodies_are_400(http_server, stub, case):
    stream = unique("bad")
    body = BAD_BODIES[case]
    body = body if isinstance(body, bytes) else json_body(body)
    count = event_count(stub)
    with KeepAlive(http_server.http_port) as conn:
        r = conn.request("POST", stream_path(stream), body=body, headers={"Content-Type": "application/json"})
        msg = expect_error(r, 400, "INVALID_ARGUMENT")
        if case == "unknown top-level field":
            assert "bogus_field" in msg, f"the 400 must name the unknown field: {msg!r}"
        if case == "unknown event field":
            assert "dataa" in msg, f"the 400 must name the unknown field: {msg!r}"
        same_conn_serves(conn, http_server)
    assert read_stream(stub, stream) == []
    assert event_count(stub) == count


UNKNOWN_ROUTES = ["/", "/nope", "/api", "/api/v1", "/api/v1/", "/api/v1/nope", "/api/v2/version",
                  "/api/v1/version/extra", "/api/v1/events", "/healthz/x",
                  "/api/v1/stream/x/y", "/api.EventStore/Version"]


@pytest.mark.parametrize("path", UNKNOWN_ROUTES)
def test_unknown_routes_are_404(http_server, path):
    with KeepAlive(http_server.http_port) as conn:
        expect_error(conn.get(path), 404, "NOT_FOUND")
        same_conn_serves(conn, http_server)


LONG_PREFIX = "/" + "a" * 198  # 199 bytes: a two-byte character after it straddles byte 200


@pytest.mark.parametrize("path, shown", [
    (b"/api/v1/\xff\xfe", "/api/v1/\ufffd\ufffd"),
    (b"/api/v1/\xc3(\xe2\x82x\xed\xa0\x80", "/api/v1/\ufffd(\ufffd\ufffdx\ufffd\ufffd\ufffd"),
    ("/api/v1/été/€/😀".encode(), "/api/v1/été/€/😀"),
    ((LONG_PREFIX + "é" * 10).encode(), LONG_PREFIX),
    ((LONG_PREFIX[:-1] + "😀" * 10).encode(), LONG_PREFIX[:-1]),
], ids=["ff-fe", "cut-short-sequences", "valid", "cut-at-200", "cut-at-200-four-bytes"])
def test_404_json_is_valid_utf8(http_server, path, shown):
    """The 404 names the path as sent, in valid UTF-8: bad bytes as U+FFFD, no character cut."""
    with http_connect(http_server.http_port) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Http1Reader(sock).read_response(timeout=15)
    assert r is not None, f"GET {path!r}: no response"
    r.body.decode("utf-8")  # strict: raises on invalid UTF-8
    assert expect_error(r, 404, "NOT_FOUND") == f"no route for {shown}", r


def test_unknown_event_is_404_and_bad_id_400(http_server):
    with KeepAlive(http_server.http_port) as conn:
        expect_error(conn.get(f"{API}/event/{uuid.uuid4()}"), 404, "NOT_FOUND")
        for bad in ("xyz", "00000000-0000-0000-0000-00000000000g", f"{uuid.uuid4()}-"):
            expect_error(conn.get(f"{API}/event/{bad}"), 400, "INVALID_ARGUMENT")
        same_conn_serves(conn, http_server)


WRONG_METHODS = [
    ("DELETE", "/api/v1/version", {"GET"}),
    ("POST", "/api/v1/version", {"GET"}),
    ("PUT", "/api/v1/uptime", {"GET"}),
    ("PUT", "/api/v1/stream/x", {"GET", "POST"}),
    ("DELETE", "/api/v1/stream/x", {"GET", "POST"}),
    ("PATCH", "/api/v1/stream/x", {"GET", "POST"}),
    ("POST", "/api/v1/stream", {"GET"}),
    ("DELETE", "/api/v1/event/count", {"GET"}),
    ("DELETE", "/api/v1/event/0190a0a0-0000-7000-8000-000000000000", {"GET"}),
    ("POST", "/healthz", {"GET"}),
    ("POST", "/readyz", {"GET"}),
]


@pytest.mark.parametrize("method,path,allowed", WRONG_METHODS, ids=[f"{m} {p}" for m, p, _ in WRONG_METHODS])
def test_wrong_method_is_405_with_allow(http_server, stub, method, path, allowed):
    count = event_count(stub)
    with KeepAlive(http_server.http_port) as conn:
        body = json_body({"version": -1, "events": [{"type": "T"}]}) if method != "DELETE" else None
        r = conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else None)
        expect_error(r, 405, "UNIMPLEMENTED")
        allow = r.header("allow")
        assert allow, f"405 without an Allow header: {r!r}"
        methods = {m.strip().upper() for m in allow.split(",") if m.strip()}
        assert allowed <= methods, f"Allow: {allow!r} should list {sorted(allowed)}"
        assert method not in methods, f"Allow: {allow!r} lists the refused method"
        same_conn_serves(conn, http_server)
    assert event_count(stub) == count


def test_conflicts_are_409(http_server, stub):
    stream = unique("conflict")
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    first = expect_ok(http_append(http_server, stream, [{"type": "T", "id": i} for i in ids], version=0))
    count = event_count(stub)
    with KeepAlive(http_server.http_port) as conn:
        msg = expect_error(http_append(http_server, stream, [{"type": "T"}], version=7, conn=conn.conn),
                           409, "ABORTED")
        assert re.search(r"\b7\b", msg) and re.search(r"\b2\b", msg), \
            f"the 409 should name expected 7 and actual 2: {msg!r}"
        expect_error(http_append(http_server, unique("other"), [{"type": "T", "id": ids[0]}], conn=conn.conn),
                     409, "ALREADY_EXISTS")
        expect_error(http_append(http_server, stream, [{"type": "T", "id": i} for i in reversed(ids)],
                                 version=-1, conn=conn.conn), 409, "ALREADY_EXISTS")
        same_conn_serves(conn, http_server)
    assert event_count(stub) == count
    # An exact retry succeeds again and writes nothing.
    again = expect_ok(http_append(http_server, stream, [{"type": "T", "id": i} for i in ids], version=0))
    assert again == first
    assert event_count(stub) == count


def test_connection_stays_open_after_4xx(http_server):
    stream = unique("ka4xx")
    with KeepAlive(http_server.http_port) as conn:
        for _ in range(3):
            expect_error(conn.get(f"{API}/stream?limit=abc"), 400, "INVALID_ARGUMENT")
            expect_error(conn.request("POST", stream_path(stream), body=b"{oops"), 400, "INVALID_ARGUMENT")
            expect_error(conn.get("/nope"), 404, "NOT_FOUND")
            expect_error(conn.get(f"{API}/event/{uuid.uuid4()}"), 404, "NOT_FOUND")
            expect_error(conn.request("DELETE", f"{API}/version"), 405, "UNIMPLEMENTED")
            expect_error(conn.request("POST", stream_path(stream), body=json_body(
                {"version": 5, "events": [{"type": "T"}]})), 409, "ABORTED")
            same_conn_serves(conn, http_server)
        assert conn.count == 3 * 7


def test_body_over_max_message_size_is_413(http_server, stub):
    stream = unique("toolarge")
    count = event_count(stub)
    big = json_body({"version": 0, "events": [{"type": "T", "data": b64(b"z" * (DEFAULT_MAX_MESSAGE + 1024))}]})
    head = request_bytes("POST", stream_path(stream), headers=[
        ("Content-Type", "application/json"), ("Content-Length", str(len(big)))])
    r, reader = send_then_read(http_server.http_port, head, big)
    reader.sock.close()
    assert r is not None, "the client must receive the 413 before the connection closes"
    expect_error(r, 413, "RESOURCE_EXHAUSTED")
    # Chunked, with no length announced: 413 too.
    head = request_bytes("POST", stream_path(stream), headers=[
        ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
    body = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 65536]), big[i:i + 65536])
                    for i in range(0, len(big), 65536)) + b"0\r\n\r\n"
    r, reader = send_then_read(http_server.http_port, head, body)
    reader.sock.close()
    assert r is not None, "the client must receive the 413 (chunked) before the connection closes"
    expect_error(r, 413, "RESOURCE_EXHAUSTED")
    assert read_stream(stub, stream) == []
    assert event_count(stub) == count
    assert expect_ok(http_get(http_server, f"{API}/version"))


def test_headers_too_large_is_431(http_server):
    sock = http_connect(http_server.http_port)
    reader = Http1Reader(sock)
    try:
        sock.sendall(request_bytes("GET", f"{API}/version", headers=[("X-Big", "a" * MIB)]))
    except OSError:
        pass  # the server may answer and close before reading it all
    r = reader.read_response(timeout=15)
    assert r is not None, "a 1 MiB header: the connection closed without a response"
    expect_error(r, 431, "RESOURCE_EXHAUSTED")
    assert reader.wait_closed(timeout=10), "the connection should be closed after a 431"
    sock.close()
    assert expect_ok(http_get(http_server, f"{API}/version"))


def test_keep_alive_1000_requests_on_one_connection(http_server, stub):
    stream = unique("ka")
    with KeepAlive(http_server.http_port) as conn:
        for i in range(1000):
            kind = i % 4
            if kind == 0:
                expect_ok(conn.get(f"{API}/version"))
            elif kind == 1:
                body = json_body({"version": i // 4, "events": [{"type": "K", "data": b64(b"%d" % i)}]})
                ack = expect_ok(conn.request("POST", stream_path(stream), body=body,
                                             headers={"Content-Type": "application/json"}))
                assert ack["first_version"] == i // 4
            elif kind == 2:
                events = expect_ok(conn.get(stream_path(stream, version=i // 4, limit=1)))["events"]
                assert [e["version"] for e in events] == [i // 4]
            else:
                expect_ok(conn.get(f"{API}/event/count"))
        assert conn.count == 1000
    assert len(read_stream(stub, stream)) == 250


def test_pipelined_requests_answered_in_order(http_server, stub):
    stream = unique("pipe")
    append(stub, stream, 50, version=0)
    reqs = b"".join(request_bytes("GET", stream_path(stream, version=i, limit=1)) for i in range(50))
    with http_connect(http_server.http_port) as sock:
        sock.sendall(reqs)  # all 50 in one write
        reader = Http1Reader(sock)
        for i in range(50):
            r = reader.read_response(timeout=15)
            assert r is not None, f"connection closed after {i} of 50 pipelined responses"
            events = expect_ok(r)["events"]
            assert [e["version"] for e in events] == [i], f"response {i} out of order: {events}"


def test_pipelined_appends_and_reads_in_order(http_server, stub):
    stream = unique("pipeapp")
    out = b""
    for i in range(20):
        body = json_body({"version": i, "events": [{"type": "P", "data": b64(b"%d" % i)}]})
        out += request_bytes("POST", stream_path(stream), body=body)
        out += request_bytes("GET", stream_path(stream, version=i))
    out += request_bytes("DELETE", f"{API}/version") + request_bytes("GET", f"{API}/stream/count")
    with http_connect(http_server.http_port) as sock:
        sock.sendall(out)
        reader = Http1Reader(sock)
        for i in range(20):
            r = reader.read_response(timeout=15)
            assert r is not None and expect_ok(r)["first_version"] == i, r
            r = reader.read_response(timeout=15)
            assert r is not None
            assert [e["version"] for e in expect_ok(r)["events"]] == [i], r
        expect_error(reader.read_response(timeout=15), 405, "UNIMPLEMENTED")
        assert "count" in expect_ok(reader.read_response(timeout=15))
    assert [e.data for e in read_stream(stub, stream)] == [b"%d" % i for i in range(20)]


def test_half_closed_client_gets_its_answers(http_server, stub):
    """A client that shuts down its sending side after its requests still reads every answer."""
    stream = unique("halfclose")
    body = json_body({"version": 0, "events": [{"type": "H", "data": b64(b"0")}]})
    with http_connect(http_server.http_port) as sock:
        sock.sendall(request_bytes("POST", stream_path(stream), body=body,
                                   headers=[("Connection", "close")]))
        sock.shutdown(socket.SHUT_WR)
        reader = Http1Reader(sock)
        r = reader.read_response(timeout=15)
        assert r is not None, "the append's answer was lost after the client's half-close"
        assert expect_ok(r)["first_version"] == 0
        assert reader.wait_closed(timeout=10), "the connection stayed open after its last answer"
    # Pipelined keep-alive requests, then the half-close: all answered in order, then the close.
    body = json_body({"version": 1, "events": [{"type": "H", "data": b64(b"1")}]})
    with http_connect(http_server.http_port) as sock:
        sock.sendall(request_bytes("POST", stream_path(stream), body=body) +
                     request_bytes("GET", stream_path(stream)))
        sock.shutdown(socket.SHUT_WR)
        reader = Http1Reader(sock)
        r = reader.read_response(timeout=15)
        assert r is not None and expect_ok(r)["first_version"] == 1, r
        r = reader.read_response(timeout=15)
        assert r is not None and len(expect_ok(r)["events"]) == 2, r
        assert reader.wait_closed(timeout=10), "the connection stayed open after its last answer"
    # Half a request, then the half-close: nothing to answer, the connection closes.
    with http_connect(http_server.http_port) as sock:
        sock.sendall(b"GET /api/v1/ver")
        sock.shutdown(socket.SHUT_WR)
        reader = Http1Reader(sock)
        assert reader.wait_closed(timeout=10), "half a request and a half-close left it open"
        assert bytes(reader.buf) == b"", f"half a request was answered: {bytes(reader.buf)!r}"
    assert len(read_stream(stub, stream)) == 2


def send_in_pieces(sock, port, pieces):
    """Sends each piece only once the server has read the one before: one read each."""
    for piece in pieces:
        sock.sendall(piece)
        wait_server_read(sock, port)


def read_head(sock, timeout=10.0):
    """The bytes up to the first empty line (one response head), read within timeout."""
    deadline = time.monotonic() + timeout
    got = b""
    while b"\r\n\r\n" not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"no response head within {timeout} s: {got!r}"
        sock.settimeout(left)
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response head: {got!r}"
        got += chunk
    return got


@pytest.mark.parametrize("pieces", [
    [b"Expect: 100-", b"continue\r\n"],
    [b"Exp", b"ect: 100-continue\r\n"],
    [b"Expect", b": ", b"100", b"-Continue  \r\n"],
], ids=["value", "name", "many"])
def test_expect_100_continue_split_across_reads(http_server, stub, pieces):
    """Expect: 100-continue whose name or value arrives in several reads still gets 100 Continue."""
    stream = unique("expect")
    body = json_body({"version": 0, "events": [{"type": "E", "data": b64(b"e")}]})
    head = request_bytes("POST", stream_path(stream), headers=[
        ("Content-Type", "application/json"), ("Content-Length", str(len(body)))])[:-2]
    with http_connect(http_server.http_port) as sock:
        send_in_pieces(sock, http_server.http_port, [head] + pieces + [b"\r\n"])
        interim = read_head(sock)
        assert interim.startswith(b"HTTP/1.1 100 "), f"no 100 Continue before the body: {interim!r}"
        sock.sendall(body)
        reader = Http1Reader(sock)
        reader.buf += interim[interim.index(b"\r\n\r\n") + 4:]
        assert expect_ok(reader.read_response(timeout=15))["first_version"] == 0
    assert len(read_stream(stub, stream)) == 1


def test_expected_version_race_over_http(http_server, stub):
    stream = unique("race")
    results = []
    lock = threading.Lock()

    def writer(n):
        r = http_append(http_server, stream, [{"type": "W", "data": b"%d" % n}], version=0)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 16
    ok = [r for r in results if r.status == 200]
    assert len(ok) == 1, f"exactly one create wins: {[r.status for r in results]}"
    for r in results:
        if r.status != 200:
            expect_error(r, 409, "ABORTED")
    assert len(read_stream(stub, stream)) == 1


def test_concurrent_clients_on_many_connections(http_server, stub):
    """Connections land on every shard loop; all are served."""
    errors = []

    def client(n):
        try:
            with KeepAlive(http_server.http_port) as conn:
                stream = unique(f"cc{n}")
                for i in range(20):
                    body = json_body({"version": i, "events": [{"type": "C"}]})
                    expect_ok(conn.request("POST", stream_path(stream), body=body,
                                           headers={"Content-Type": "application/json"}))
                assert len(expect_ok(conn.get(stream_path(stream)))["events"]) == 20
        except BaseException as e:  # noqa: B902 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]


# ---- curl, HTTP/1.1 and h2c -------------------------------------------------------------------

def test_routes_with_curl_http1(http_server, stub):
    stream = unique("curl1")
    r = curl(url(http_server, f"{API}/version"))
    assert r.version == "1.1" and expect_ok(r) == {"version": server_version(stub)}
    r = curl(url(http_server, stream_path(stream)), data={"version": 0, "events": [{"type": "T", "data": b64(b"c")}]})
    ack = expect_ok(r)
    r = curl(url(http_server, stream_path(stream)))
    assert [e["id"] for e in expect_ok(r)["events"]] == ack["events"]
    # Chunked upload with curl.
    r = curl(url(http_server, stream_path(stream)), data={"version": 1, "events": [{"type": "U"}]},
             headers=["Transfer-Encoding: chunked"])
    assert expect_ok(r)["first_version"] == 1
    r = curl(url(http_server, f"{API}/version"), method="DELETE")
    expect_error(r, 405, "UNIMPLEMENTED")
    assert r.header("allow")


def test_every_route_over_h2c_with_curl(http_server, stub):
    stream = unique("h2c é/x")
    u = lambda p: url(http_server, p)  # noqa: E731
    r = curl(u(f"{API}/version"), http2=True)
    assert r.version == "2", f"curl --http2-prior-knowledge got HTTP/{r.version}"
    assert expect_ok(r) == {"version": server_version(stub)}
    assert set(expect_ok(curl(u(f"{API}/uptime"), http2=True))) == {"uptime", "uptime_human"}
    assert curl(u("/healthz"), http2=True).status == 200
    assert curl(u("/readyz"), http2=True).status == 200

    data = bytes(range(256))
    r = curl(u(stream_path(stream)), http2=True,
             data={"version": 0, "events": [{"type": "H2", "data": b64(data)}, {"type": "H2b"}]})
    ack = expect_ok(r)
    assert r.version == "2" and ack["first_version"] == 0 and len(ack["events"]) == 2
    got = read_stream(stub, stream)
    assert [e.id for e in got] == ack["events"] and got[0].data == data

    events = expect_ok(curl(u(stream_path(stream)), http2=True))["events"]
    assert events == [grpc_event_as_json(e) for e in got]
    assert expect_ok(curl(u(stream_path(stream, version=1, limit=1)), http2=True))["events"] == events[1:]
    assert expect_ok(curl(u(f"{API}/event/{ack['events'][0]}"), http2=True)) == events[0]
    wait_global(stub, ack["first_position"] + 1)
    page = expect_ok(curl(u(f"{API}/stream/all?offset={ack['first_position'] - 1}&limit=2"), http2=True))
    assert page == {"events": events, "checkpoint": ack["first_position"] + 1}
    assert expect_ok(curl(u(f"{API}/stream/count"), http2=True)) == {"count": stream_count(stub)}
    assert expect_ok(curl(u(f"{API}/event/count"), http2=True)) == {"count": event_count(stub)}
    listed = expect_ok(curl(u(f"{API}/stream?offset=0&limit=3"), http2=True))
    assert listed == {"streams": list_streams(stub, 0, 3)}
    assert expect_ok(curl(u(f"{API}/stream?skip=1&limit=3"), http2=True)) == {"streams": list_streams(stub, 1, 3)}


def test_errors_over_h2c_with_curl(http_server, stub):
    u = lambda p: url(http_server, p)  # noqa: E731
    stream = unique("h2err")
    expect_error(curl(u("/nope"), http2=True), 404, "NOT_FOUND")
    expect_error(curl(u(f"{API}/event/{uuid.uuid4()}"), http2=True), 404, "NOT_FOUND")
    r = curl(u(f"{API}/version"), method="DELETE", http2=True)
    expect_error(r, 405, "UNIMPLEMENTED")
    assert "GET" in (r.header("allow") or "").upper(), r
    r = curl(u(f"{API}/stream/x"), method="PUT", data=b"{}", http2=True)
    expect_error(r, 405, "UNIMPLEMENTED")
    assert {"GET", "POST"} <= {m.strip().upper() for m in (r.header("allow") or "").split(",")}, r
    expect_error(curl(u(f"{API}/stream?limit=abc"), http2=True), 400, "INVALID_ARGUMENT")
    expect_error(curl(u(stream_path(stream)), data=b"{nope", http2=True), 400, "INVALID_ARGUMENT")
    msg = expect_error(curl(u(stream_path(stream)), data={"version": 0, "events": [{"type": "T"}], "zzz_unknown": 1},
                            http2=True), 400, "INVALID_ARGUMENT")
    assert "zzz_unknown" in msg
    expect_ok(curl(u(stream_path(stream)), data={"events": [{"type": "T"}]}, http2=True))
    expect_error(curl(u(stream_path(stream)), data={"events": [{"type": "T"}]}, http2=True), 409, "ABORTED")
    assert len(read_stream(stub, stream)) == 1


def test_many_requests_on_one_connection_curl_http1(http_server):
    paths = [f"{API}/version", f"{API}/stream/count", "/healthz", f"{API}/event/count", "/nope"] * 8
    results = curl_many([url(http_server, p) for p in paths])
    assert [c for c, _ in results] == [404 if p == "/nope" else 200 for p in paths]
    assert sum(n for _, n in results) == 1, f"curl should reuse one HTTP/1.1 connection (404 keeps it): {results}"


def test_many_sequential_requests_on_one_h2c_connection(http_server, stub):
    """python3-h2 (Debian's curl 7.88.1 cannot reuse an h2c prior-knowledge connection): 300 requests in turn."""
    stream = unique("h2seq")
    with RawH2(http_server.http_port) as h:
        for i in range(100):
            body = json_body({"version": i, "events": [{"type": "Q", "data": b64(b"%d" % i)}]})
            r = h.response(h.request("POST", stream_path(stream), body=body,
                                     extra=[("content-type", "application/json")]), timeout=20)
            assert r.http_status == 200 and json.loads(bytes(r.data))["first_version"] == i, r
            r = h.response(h.request("GET", stream_path(stream, version=i)), timeout=20)
            assert r.http_status == 200, r
            assert [e["version"] for e in json.loads(bytes(r.data))["events"]] == [i]
            r = h.response(h.request("GET", "/nope"), timeout=20)
            assert r.http_status == 404 and json.loads(bytes(r.data))["code"] == "NOT_FOUND", r
        assert not h.closed and h.goaway is None
    assert len(read_stream(stub, stream)) == 100


def test_concurrent_streams_on_one_h2c_connection(http_server, stub):
    """python3-h2: 40 requests open at once on one h2c connection, bodies sent in several DATA frames."""
    streams = [unique("h2s") for _ in range(20)]
    with RawH2(http_server.http_port) as h:
        sids = []
        for s in streams:
            body = json_body({"version": 0, "events": [{"type": "S", "data": b64(b"y" * 40000)}]})
            sid = h.request("POST", stream_path(s), body=None, end_stream=False,
                            extra=[("content-type", "application/json"), ("content-length", str(len(body)))])
            sids.append((sid, body))
        for sid, body in sids:
            h.data(sid, body, end_stream=True)
        gets = [h.request("GET", f"{API}/version") for _ in range(20)]
        for sid, _ in sids:
            r = h.response(sid, timeout=20)
            assert r.http_status == 200, r
            assert r.headers.get("content-type", "").startswith("application/json"), r
            assert json.loads(bytes(r.data))["first_version"] == 0
        for sid in gets:
            r = h.response(sid, timeout=20)
            assert r.http_status == 200 and json.loads(bytes(r.data))["version"], r
    for s in streams:
        assert [e.data for e in read_stream(stub, s)] == [b"y" * 40000]


# ---- servers with their own settings ---------------------------------------------------------

def test_http_pages_cut_to_max_message_size(server_factory, pb):
    limit = 64 * 1024
    s = wait_http_ready(server_factory.new(env={"MAX_MESSAGE_SIZE": "64K"}))
    st = s.stub()
    stream = unique("cut")
    # Three 20000-byte events: 60 KB of protobuf fits one gRPC page, but their
    # JSON (base64) does not fit one HTTP page.
    acks = [append(st, stream, [event_data("Chunk", bytes([65 + i]) * 20000)]) for i in range(3)]
    r = http_get(s, stream_path(stream))
    page = expect_ok(r)["events"]
    assert len(r.body) <= limit, f"an HTTP page of {len(page)} events is {len(r.body)} bytes > {limit}"
    assert [e["version"] for e in page] == [0, 1], "as many whole events as fit (full pages)"
    assert [e["version"] for e in http_read_stream(s, stream, version=2)] == [2]
    wait_global(st, acks[2].first_position)
    g = http_read_global(s, offset=acks[0].first_position - 1)
    assert [e["id"] for e in g["events"]] == [acks[0].events[0], acks[1].events[0]]
    assert g["checkpoint"] == acks[1].first_position

    # An event that fits a gRPC response (and was accepted) but whose JSON alone
    # passes the limit: an HTTP page still holds it, alone.
    big = bytes(range(256)) * 234  # 59904 bytes, ~80 KB of base64
    r_big = append(st, stream, [event_data("Big", big)])
    append(st, stream, [event_data("Small", b"s")])
    page = http_read_stream(s, stream, version=3)
    assert len(page) == 1 and unb64(page[0]["data"]) == big
    assert [e["type"] for e in http_read_stream(s, stream, version=4)] == ["Small"]
    assert unb64(expect_ok(http_get(s, f"{API}/event/{r_big.events[0]}"))["data"]) == big
    wait_global(st, r_big.first_position + 1)
    g = http_read_global(s, offset=r_big.first_position - 1)
    assert [e["type"] for e in g["events"]] == ["Big"] and g["checkpoint"] == r_big.first_position
    # Every stored event can be read over HTTP by paging.
    seen, version = [], 0
    while True:
        page = http_read_stream(s, stream, version=version)
        if not page:
            break
        seen += page
        version = page[-1]["version"] + 1
    assert [e["version"] for e in seen] == list(range(5))
    # A body over this server's limit is a 413.
    body = json_body({"version": -1, "events": [{"type": "T", "data": b64(b"q" * limit)}]})
    resp, reader = send_then_read(s.http_port, request_bytes("POST", stream_path(stream), body=body))
    reader.sock.close()
    assert resp is not None, "no 413 before the connection closed"
    expect_error(resp, 413, "RESOURCE_EXHAUSTED")
    # The same over h2c: the 413 arrives (the server may reset the stream after it).
    with RawH2(s.http_port) as h:
        sid = h.request("POST", stream_path(stream), end_stream=False,
                        extra=[("content-type", "application/json"), ("content-length", str(len(body)))])
        try:
            h.data(sid, body, end_stream=True, timeout=10)
        except Exception:  # noqa: BLE001 - the stream may be answered and closed before the whole body
            pass
        r = h.response(sid, timeout=10)
        assert r.http_status == 413, f"h2c body over MAX_MESSAGE_SIZE: {r!r}"
        assert json.loads(bytes(r.data))["code"] == "RESOURCE_EXHAUSTED", r
        # The connection is still usable for other streams.
        r = h.response(h.request("GET", f"{API}/version"), timeout=10)
        assert r.http_status == 200, r
    assert len(read_stream_all(st, stream)) == 5


def test_storage_full_is_507(server_factory, pb):
    s = wait_http_ready(server_factory.new(env={"MAP_SIZE": "1M", "SHARDS": "1"}))
    st = s.stub()
    stream = unique("full")
    data = b64(bytes(range(256)) * 512)  # 128 KiB per event
    stored, full = 0, None
    with KeepAlive(s.http_port) as conn:
        for _ in range(64):
            r = conn.request("POST", stream_path(stream),
                             body=json_body({"version": -1, "events": [{"type": "F", "data": data}]}),
                             headers={"Content-Type": "application/json"})
            if r.status != 200:
                full = r
                break
            stored += 1
        assert full is not None, "a 1 MiB map never filled up with 64 appends of 128 KiB"
        expect_error(full, 507, "RESOURCE_EXHAUSTED")
        # Reads go on, on the same connection.
        assert expect_ok(conn.get(f"{API}/event/count")) == {"count": stored}
        assert len(expect_ok(conn.get(stream_path(stream)))["events"]) == stored
        expect_error(conn.request("POST", stream_path(stream),
                                  body=json_body({"version": -1, "events": [{"type": "F", "data": data}]}),
                                  headers={"Content-Type": "application/json"}), 507, "RESOURCE_EXHAUSTED")
    assert len(read_stream(st, stream)) == stored


def _wait_exit(s):
    """A second SIGTERM would not be graceful: wait for the first one to end the process, then check it."""
    try:
        s.proc.wait(timeout=STOP_TIMEOUT)
    except Exception:
        pytest.fail(f"the server did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM:\n{s.stderr_tail()}",
                    pytrace=False)
    assert s.stop(check=True) == 0  # already exited: records it, checks exit 0 and stderr


def test_shutdown_answers_503_http1(server_factory):
    """Requests begun (head or body partly sent) when SIGTERM arrives are answered: 503 UNAVAILABLE, /readyz 503."""
    s = wait_http_ready(server_factory.new())
    socks = []
    body = json_body({"version": -1, "events": [{"type": "T"}]})
    try:
        begun = []
        for path in ("/readyz", f"{API}/stream/count", f"{API}/version", "POST"):
            sock = http_connect(s.http_port)
            socks.append(sock)
            reader = Http1Reader(sock)
            sock.sendall(request_bytes("GET", "/healthz"))  # accepted and served first
            r = reader.read_response(timeout=10)
            assert r is not None and r.status == 200, r
            if path == "POST":  # the head and part of the body
                sock.sendall(request_bytes("POST", stream_path(unique("late")), body=body)[:-len(body) + 5])
                rest = body[5:]
            else:  # part of the head
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n".encode())
                rest = b"\r\n"
            wait_server_read(sock, s.http_port)
            begun.append((path, sock, reader, rest))
        s.proc.send_signal(signal.SIGTERM)
        poll(lambda: connection_refused(s.http_port) or not s.alive(), timeout=10,
             what="the HTTP listeners to close after SIGTERM")
        for path, sock, reader, rest in begun:
            try:
                sock.sendall(rest)
            except OSError:
                pass
            r = reader.read_response(timeout=10)
            assert r is not None, \
                f"{path}: a request begun before SIGTERM got no response (the connection was closed)"
            if path == "/readyz":
                assert r.status == 503, f"/readyz while shutting down: {r!r}"
            elif path == "POST":
                assert r.status in (200, 503), r
                if r.status == 503:
                    expect_error(r, 503, "UNAVAILABLE")
            else:
                expect_error(r, 503, "UNAVAILABLE")
    finally:
        for sock in socks:
            sock.close()
    _wait_exit(s)


class MiniH2:
    """
    Just enough HTTP/2 framing (with python3-hpack) to keep using open streams
    after a GOAWAY, which python3-h2 refuses to do.
    """

    def __init__(self, port):
        import hpack
        self.port = port
        self.sock = http_connect(port)
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.buf = bytearray()
        self.responses = {}  # sid -> {"headers": {}, "data": bytearray(), "ended": bool, "reset": code}
        self.goaway = None
        self.closed = False
        self.pings = set()
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + self.frame(4, 0, 0, b""))

    @staticmethod
    def frame(ftype, flags, sid, payload):
        return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload

    def headers(self, sid, method, path, end_stream, extra=()):
        block = self.enc.encode([(":method", method), (":scheme", "http"), (":path", path),
                                 (":authority", f"127.0.0.1:{self.port}")] + list(extra))
        self.responses[sid] = {"headers": {}, "data": bytearray(), "ended": False, "reset": None}
        self.sock.sendall(self.frame(1, 0x4 | (0x1 if end_stream else 0), sid, block))

    def data(self, sid, payload, end_stream):
        self.sock.sendall(self.frame(0, 0x1 if end_stream else 0, sid, payload))

    def ping(self, timeout=10.0):
        """Sends a PING and reads until its ACK: the server has read everything sent before."""
        token = os.urandom(8)
        self.sock.sendall(self.frame(6, 0, 0, token))
        deadline = time.monotonic() + timeout
        while token not in self.pings:
            assert self._read(deadline), "connection closed before the PING ACK"

    def response(self, sid, timeout=10.0):
        deadline = time.monotonic() + timeout
        r = self.responses[sid]
        while not r["ended"] and r["reset"] is None:
            if not self._read(deadline):
                break
        return r

    def _read(self, deadline):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the server in time")
            self.sock.settimeout(min(left, 0.5))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return False
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        ftype, flags, sid = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload = bytes(self.buf[9:9 + n])
        del self.buf[:9 + n]
        r = self.responses.get(sid)
        if ftype == 4 and not flags & 1:
            self._send(self.frame(4, 1, 0, b""))  # SETTINGS ACK
        elif ftype == 6:
            if flags & 1:
                self.pings.add(payload)
            else:
                self._send(self.frame(6, 1, 0, payload))
        elif ftype == 7:
            self.goaway = int.from_bytes(payload[4:8], "big")
        elif ftype == 1:
            assert flags & 0x4, "CONTINUATION frames are not handled by this small client"
            block = payload
            if flags & 0x8:  # PADDED
                block = block[1:len(block) - block[0]]
            if flags & 0x20:  # PRIORITY
                block = block[5:]
            decoded = self.dec.decode(block)
            if r is not None:
                r["headers"].update({(k.decode() if isinstance(k, bytes) else k):
                                     (v.decode() if isinstance(v, bytes) else v) for k, v in decoded})
                r["ended"] = r["ended"] or bool(flags & 1)
        elif ftype == 0 and r is not None:
            r["data"] += payload[1:len(payload) - payload[0]] if flags & 0x8 else payload
            r["ended"] = r["ended"] or bool(flags & 1)
            if payload:
                inc = len(payload).to_bytes(4, "big")
                self._send(self.frame(8, 0, 0, inc) + self.frame(8, 0, sid, inc))
        elif ftype == 3 and r is not None:
            r["reset"] = int.from_bytes(payload[:4], "big")
        return True

    def _send(self, data):
        """Control frames on our side: the server may already have closed after its last answer."""
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def close(self):
        self.sock.close()


def test_shutdown_answers_503_h2c(server_factory):
    """h2c streams open when SIGTERM arrives finish after the GOAWAY: 503 UNAVAILABLE, /readyz 503."""
    s = wait_http_ready(server_factory.new())
    h = MiniH2(s.http_port)
    try:
        h.headers(1, "GET", "/healthz", end_stream=True)
        assert h.response(1)["headers"].get(":status") == "200"
        h.headers(3, "GET", "/readyz", end_stream=False)
        h.headers(5, "GET", f"{API}/stream/count", end_stream=False)
        body = json_body({"version": -1, "events": [{"type": "T"}]})
        h.headers(7, "POST", stream_path(unique("late")), end_stream=False,
                  extra=[("content-type", "application/json")])
        h.data(7, body[:5], end_stream=False)
        h.ping()
        s.proc.send_signal(signal.SIGTERM)
        poll(lambda: connection_refused(s.http_port) or not s.alive(), timeout=10,
             what="the HTTP listeners to close after SIGTERM")
        h.data(3, b"", end_stream=True)
        h.data(5, b"", end_stream=True)
        h.data(7, body[5:], end_stream=True)
        for sid in (3, 5, 7):
            r = h.response(sid)
            status = r["headers"].get(":status")
            assert r["ended"] and status, \
                f"stream {sid}, open before SIGTERM, got no complete response: {r} (GOAWAY {h.goaway})"
            text = bytes(r["data"])
            if sid == 3:
                assert status == "503", f"/readyz while shutting down: {status} {text!r}"
            elif sid == 5 or status != "200":
                assert status == "503" and json.loads(text)["code"] == "UNAVAILABLE", f"{status} {text!r}"
    finally:
        h.close()
    _wait_exit(s)


def test_h2c_answers_after_a_failed_send_are_not_counted(server_factory):
    """
    The server's HTTP/2 sends fail from its first response on (fail_sends.c): six appends read
    together on one h2c connection are all stored, but one answer went out at most, and the
    request metrics count only that one.
    """
    s = server_factory.new(env={"SHARDS": "1", **failing_sends_env(after_responses=1)},
                           start=False)
    s.spawn()
    wait_http_ready(s)  # over HTTP/1.1, which sends without nghttp2
    streams = [unique("h2c-lost") for _ in range(6)]
    body = json.dumps({"events": [{"type": "Lost"}], "version": -1}).encode()
    with RawH2(s.http_port, timeout=30) as raw:
        for stream in streams:  # all in one write: one read, one batch
            sid = raw.conn.get_next_available_stream_id()
            raw.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                        (":path", stream_path(stream)),
                                        (":authority", f"{HOST}:{s.http_port}"),
                                        ("content-type", "application/json")])
            raw.conn.send_data(sid, body, end_stream=True)
        raw.flush()
        raw_frames_until_closed(raw, STOP_TIMEOUT)
    stored = sorted(e["stream"] for e in http_read_global(s, 0)["events"])
    assert stored == sorted(streams), "every append read before the failure is stored"
    _, m = scrape(s)
    answered = m.value("eventflowdb_requests_total", transport="http", method="append")
    assert answered == 1, f"{answered} appends counted as answered; one answer went out at most"
