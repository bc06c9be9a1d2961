"""
gRPC protocol behaviour: unknown methods, health, message framing and
decoding errors, compression refusal, deadlines, message-size limits and
page cutting, many concurrent calls on one channel. Raw HTTP/2 (python3-h2)
where a real client would not send such bytes.
"""

import gzip
import time
import uuid

import grpc
import pytest

from conftest import (
    DEFAULT_MAX_MESSAGE, MIB, RPC_TIMEOUT, RawH2, append, event_count, event_data, expect_code,
    grpc_frame, raw_method, read_global, read_stream, server_version, unique, wait_global,
)

HEALTH = "/grpc.health.v1.Health/Check"

# gRPC status codes as numbers (grpc-status trailer).
OK, DEADLINE_EXCEEDED, NOT_FOUND, RESOURCE_EXHAUSTED = 0, 4, 5, 8
INVALID_ARGUMENT, UNIMPLEMENTED, INTERNAL = 3, 12, 13


def still_serving(server, stub):
    """The server answers on the existing channel and on a fresh one."""
    assert server_version(stub)
    assert server_version(server.stub(server.channel(own_connection=True)))


# ---- methods and health -----------------------------------------------------

@pytest.mark.parametrize("path", ["/api.EventStore/Nope", "/foo.Bar/Baz", "/api.EventStore/version",
                                  "/api.EventStoreX/Version", "/api.EventStore/Version/x"])
def test_unknown_method_is_unimplemented(server, path):
    ch = server.channel()
    expect_code(grpc.StatusCode.UNIMPLEMENTED, raw_method(ch, path), b"")


def test_unknown_method_over_raw_h2(server):
    with RawH2(server.grpc_port) as h:
        r = h.call("/foo.Bar/Baz", b"")
        assert r.http_status == 200, r
        assert r.grpc_status == UNIMPLEMENTED, r


def test_health_check(server):
    check = raw_method(server.channel(), HEALTH)
    assert check(b"", timeout=RPC_TIMEOUT) == b"\x08\x01"  # status: SERVING
    assert check(b"\x0a\x00", timeout=RPC_TIMEOUT) == b"\x08\x01"  # service "" spelled out
    unknown = b"\x0a\x0bnope.Nope.X"
    assert len(unknown) == 2 + len("nope.Nope.X")
    expect_code(grpc.StatusCode.NOT_FOUND, check, unknown)


# ---- the raw HTTP/2 helper itself, against the server ------------------------

def test_raw_h2_helper_speaks_grpc(server, pb, stub):
    """The bare client used by the protocol and hostile tests makes valid calls."""
    stream = unique("raw")
    with RawH2(server.grpc_port) as h:
        r = h.call("/api.EventStore/Version", pb.VersionRequest().SerializeToString())
        assert r.http_status == 200, r
        assert r.headers.get("content-type", "").startswith("application/grpc"), r
        assert r.grpc_status == OK, r
        [msg] = r.messages()
        assert pb.VersionResponse.FromString(msg).version
        req = pb.AppendToStreamRequest(stream=stream, version=0, events=[event_data("Raw", b"x")])
        r = h.call("/api.EventStore/AppendToStream", req.SerializeToString())
        assert r.grpc_status == OK, r
        ack = pb.AppendToStreamResponse.FromString(r.messages()[0])
        assert ack.first_version == 0 and len(ack.events) == 1
        # A request split over many DATA frames, the prefix cut in two.
        body = grpc_frame(pb.AppendToStreamRequest(stream=stream, version=1,
                                                   events=[event_data("Raw", b"y" * 3000)]).SerializeToString())
        sid = h.headers("/api.EventStore/AppendToStream")
        for i in range(0, len(body), 2):
            h.data(sid, body[i:i + 2])
        h.data(sid, b"", end_stream=True)
        r = h.response(sid)
        assert r.grpc_status == OK, r
    got = read_stream(stub, stream)
    assert [(e.version, e.data) for e in got] == [(0, b"x"), (1, b"y" * 3000)]


# ---- bad messages -------------------------------------------------------------

UNDECODABLE = [
    b"\xff",                   # a tag whose varint never ends
    b"\x0a\x05ab",             # field 1, length 5, only 2 bytes
    b"\x0f",                   # field 1 with wire type 7
    b"\x12" + b"\xff" * 11,    # a length varint longer than 10 bytes
]


@pytest.mark.parametrize("method", ["AppendToStream", "GetStream", "GetEvent", "ListStreams",
                                    "GetGlobalStream"])
@pytest.mark.parametrize("payload", UNDECODABLE, ids=lambda b: b.hex())
def test_undecodable_message_is_invalid_argument(server, stub, method, payload):
    call = raw_method(server.channel(), f"/api.EventStore/{method}")
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, call, payload)


def test_invalid_utf8_is_invalid_argument(server, stub, pb):
    count = event_count(stub)
    append_raw = raw_method(server.channel(), "/api.EventStore/AppendToStream")
    ev = pb.EventData(type="T").SerializeToString()
    # stream = "\xff\xfe" (not UTF-8), one valid event
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, append_raw,
                b"\x0a\x02\xff\xfe" + b"\x10\x00" + b"\x1a" + bytes([len(ev)]) + ev)
    # valid stream, event type "\xc3" (a truncated 2-byte sequence)
    bad_ev = b"\x0a\x01\xc3"
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, append_raw,
                b"\x0a\x03abc" + b"\x1a" + bytes([len(bad_ev)]) + bad_ev)
    # overlong encoding of "/" and a UTF-16 surrogate in the stream name
    for name in (b"\xc0\xaf", b"\xed\xa0\x80"):
        expect_code(grpc.StatusCode.INVALID_ARGUMENT, append_raw,
                    b"\x0a" + bytes([len(name)]) + name + b"\x1a" + bytes([len(ev)]) + ev)
    assert event_count(stub) == count


def _framing_cases(pb):
    body = pb.GetStreamRequest(stream="x").SerializeToString()
    return {
        "prefix cut after 3 bytes": b"\x00\x00\x00",
        "prefix of 1 byte": b"\x00",
        "prefix says 100, body has 10": b"\x00" + (100).to_bytes(4, "big") + b"\x0a\x08abcdefgh",
        "prefix says 1 byte more": b"\x00" + (len(body) + 1).to_bytes(4, "big") + body,
    }


def test_bad_framing_is_an_error_and_harmless(server, stub, pb):
    cases = _framing_cases(pb)
    with RawH2(server.grpc_port) as h:
        for name, payload in cases.items():
            sid = h.headers("/api.EventStore/GetStream")
            h.data(sid, payload, end_stream=True)
            r = h.response(sid)
            assert r.grpc_status not in (None, OK), f"{name}: {r!r}"
        # No DATA at all: there is no request message.
        sid = h.headers("/api.EventStore/GetStream", end_stream=True)
        r = h.response(sid)
        assert r.grpc_status not in (None, OK), f"no message: {r!r}"
        # The same connection still serves a good call.
        r = h.call("/api.EventStore/Version", b"")
        assert r.grpc_status == OK, r
    still_serving(server, stub)


# ---- compression ----------------------------------------------------------------

def test_compressed_messages_are_refused(server, stub, pb):
    stream = unique("gz")
    req = pb.AppendToStreamRequest(stream=stream, version=-1, events=[event_data("Z", b"\x00" * 65536)])
    refused = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL)

    # A real client asked to gzip: grpc-encoding: gzip and the compressed flag.
    try:
        stub.AppendToStream(req, timeout=RPC_TIMEOUT, compression=grpc.Compression.Gzip)
        pytest.fail("a gzip-compressed append was accepted")
    except grpc.RpcError as e:
        assert e.code() in refused, (e.code(), e.details())
        assert e.details(), "the refusal should say why"

    plain = req.SerializeToString()
    packed = gzip.compress(plain)
    with RawH2(server.grpc_port) as h:
        # Flag 1 without any grpc-encoding header.
        sid = h.headers("/api.EventStore/AppendToStream")
        h.data(sid, grpc_frame(packed, compressed=True), end_stream=True)
        r = h.response(sid)
        assert r.grpc_status in (UNIMPLEMENTED, INTERNAL), r
        assert r.grpc_message, r
        # grpc-encoding: gzip with the flag set.
        sid = h.headers("/api.EventStore/AppendToStream", extra=[("grpc-encoding", "gzip")])
        h.data(sid, grpc_frame(packed, compressed=True), end_stream=True)
        r = h.response(sid)
        assert r.grpc_status in (UNIMPLEMENTED, INTERNAL), r
        # grpc-encoding: gzip, flag 0 (an uncompressed message is always allowed).
        sid = h.headers("/api.EventStore/Version", extra=[("grpc-encoding", "gzip")])
        h.data(sid, grpc_frame(b""), end_stream=True)
        r = h.response(sid)
        assert r.grpc_status in (OK, UNIMPLEMENTED, INTERNAL), r
    assert read_stream(stub, stream) == [], "a refused compressed append wrote something"
    still_serving(server, stub)


# ---- deadlines ---------------------------------------------------------------------

def test_deadline_on_a_request_that_never_finishes(server, stub):
    with RawH2(server.grpc_port) as h:
        t0 = time.monotonic()
        sid = h.headers("/api.EventStore/AppendToStream", grpc_timeout="200m")
        h.data(sid, b"\x00" + (100).to_bytes(4, "big") + b"\x0a\x08abcdefgh")  # no END_STREAM
        r = h.response(sid, timeout=10)
        elapsed = time.monotonic() - t0
        assert r.grpc_status == DEADLINE_EXCEEDED, r
        assert 0.15 <= elapsed < 10, f"DEADLINE_EXCEEDED after {elapsed:.3f} s for a 200 ms deadline"
        # Same with only the HEADERS sent.
        t0 = time.monotonic()
        sid = h.headers("/api.EventStore/GetStream", grpc_timeout="300m")
        r = h.response(sid, timeout=10)
        assert r.grpc_status == DEADLINE_EXCEEDED, r
        assert time.monotonic() - t0 >= 0.25
        # A complete request with a deadline is served normally.
        r = h.call("/api.EventStore/Version", b"", grpc_timeout="5S")
        assert r.grpc_status == OK, r
    assert server_version(stub, timeout=5)


def test_a_request_that_stops_arriving_is_answered_without_a_deadline(server_factory, pb):
    """
    HTTP_REQUEST_TIMEOUT_MS bounds how long a unary request may stall before it has come whole,
    with no grpc-timeout or a longer one; a request that keeps coming is not cut; once it came
    whole, the call's own deadline rules again.
    """
    s = server_factory.new(env={"HTTP_REQUEST_TIMEOUT_MS": "500"})
    with RawH2(s.grpc_port) as h:
        # Pieces 200 ms apart, 0.8 s in all: it keeps coming, it is served.
        stream = unique("paced")
        message = grpc_frame(pb.AppendToStreamRequest(
            stream=stream, version=-1, events=[event_data(data=b"p" * 4000)]).SerializeToString())
        sid = h.headers("/api.EventStore/AppendToStream")
        pieces = [message[i:i + 1000] for i in range(0, len(message), 1000)]
        for piece in pieces[:-1]:
            h.data(sid, piece)
            time.sleep(0.2)  # the pace under test, not a wait for the server
        h.data(sid, pieces[-1], end_stream=True)
        r = h.response(sid, timeout=10)
        assert r.grpc_status == 0 and len(pieces) >= 5, r
        for timeout in (None, "30S"):
            t0 = time.monotonic()
            sid = h.headers("/api.EventStore/AppendToStream", grpc_timeout=timeout)
            h.data(sid, b"\x00" + (100).to_bytes(4, "big") + b"\x0a\x08abcdefgh")  # no more
            r = h.response(sid, timeout=10)
            elapsed = time.monotonic() - t0
            assert r.grpc_status == DEADLINE_EXCEEDED, r
            assert "HTTP_REQUEST_TIMEOUT_MS" in r.grpc_message, r
            assert 0.45 <= elapsed < 10, f"answered after {elapsed:.3f} s for a 500 ms bound"
        # Whole in time, a call keeps its own deadline, longer than the bound: a subscription.
        t0 = time.monotonic()
        sid = h.headers("/api.EventStore/SubscribeToStream", grpc_timeout="1500m")
        h.data(sid, grpc_frame(b"\x0a\x03abc"), end_stream=True)
        r = h.response(sid, timeout=10)
        assert r.grpc_status == DEADLINE_EXCEEDED and "deadline of 1500 ms" in r.grpc_message, r
        assert time.monotonic() - t0 >= 1.45
    assert server_version(s.stub(), timeout=5)


def test_deadlines_fire_in_their_order_not_their_calls_order(server, stub):
    """Calls opened with deadlines out of order each end when their own deadline passes."""
    with RawH2(server.grpc_port) as h:
        t0 = time.monotonic()
        late = h.headers("/api.EventStore/GetStream", grpc_timeout="3500m")
        early = h.headers("/api.EventStore/GetStream", grpc_timeout="500m")
        middle = h.headers("/api.EventStore/GetStream", grpc_timeout="2000m")
        # A call that completes leaves the others' deadlines as they were.
        assert h.call("/api.EventStore/Version", b"", grpc_timeout="30S").grpc_status == OK
        order, ended = (early, middle, late), []
        for sid in order:
            r = h.response(sid, timeout=10)
            ended.append(time.monotonic() - t0)
            assert r.grpc_status == DEADLINE_EXCEEDED, r
            assert not any(h.responses[s].done for s in order[len(ended):]), f"ended together: {ended}"
        # Only lower bounds: a loaded machine may answer late, never early.
        assert ended[0] >= 0.45 and ended[1] >= 1.95 and ended[2] >= 3.45, ended
    assert server_version(stub, timeout=5)


# ---- message sizes -------------------------------------------------------------------

def test_request_over_max_message_size(server, stub):
    stream = unique("big")
    expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, append, stub, stream,
                [event_data("Big", b"b" * (DEFAULT_MAX_MESSAGE + 1024))])
    assert read_stream(stub, stream) == []
    still_serving(server, stub)


def test_announced_length_over_limit_is_refused_at_once(server, stub):
    """A prefix announcing 4 GiB gets RESOURCE_EXHAUSTED without the body being sent."""
    with RawH2(server.grpc_port) as h:
        sid = h.headers("/api.EventStore/AppendToStream")
        h.data(sid, b"\x00\xff\xff\xff\xff" + b"\x0a\x01a")  # no END_STREAM, no deadline
        r = h.response(sid, timeout=10)
        assert r.grpc_status == RESOURCE_EXHAUSTED, r
        sid = h.headers("/api.EventStore/AppendToStream")
        h.data(sid, b"\x00" + (DEFAULT_MAX_MESSAGE + 1).to_bytes(4, "big"))
        r = h.response(sid, timeout=10)
        assert r.grpc_status == RESOURCE_EXHAUSTED, r
    still_serving(server, stub)


def test_event_that_would_not_fit_in_a_response_is_refused(server, stub, pb):
    stream = unique("fit")
    ev = event_data("Big", b"f" * (DEFAULT_MAX_MESSAGE - 100))
    req = pb.AppendToStreamRequest(stream=stream, version=-1, events=[ev])
    assert req.ByteSize() < DEFAULT_MAX_MESSAGE, "the request itself must be within the limit"
    count = event_count(stub)
    expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, stub.AppendToStream, req)
    assert read_stream(stub, stream) == []
    assert event_count(stub) == count


def test_event_near_the_limit_round_trips(server, stub, pb):
    stream = unique("near")
    data = bytes(range(256)) * ((DEFAULT_MAX_MESSAGE - 1024) // 256)
    assert len(data) == DEFAULT_MAX_MESSAGE - 1024
    r = append(stub, stream, [event_data("Near", data)], version=0)

    got = read_stream(stub, stream)
    assert len(got) == 1 and got[0].data == data and got[0].id == r.events[0]
    raw = raw_method(server.channel(), "/api.EventStore/GetStream")(
        pb.GetStreamRequest(stream=stream).SerializeToString(), timeout=RPC_TIMEOUT)
    assert len(raw) <= DEFAULT_MAX_MESSAGE

    wait_global(stub, r.first_position)
    g = read_global(stub, r.first_position - 1, 0)
    assert len(g.events) >= 1
    assert g.events[0].id == r.events[0] and g.events[0].data == data
    raw = raw_method(server.channel(), "/api.EventStore/GetGlobalStream")(
        pb.GetGlobalStreamRequest(offset=r.first_position - 1).SerializeToString(), timeout=RPC_TIMEOUT)
    assert len(raw) <= DEFAULT_MAX_MESSAGE

    assert stub.GetEvent(pb.GetEventRequest(id=r.events[0]), timeout=RPC_TIMEOUT).data == data


def _check_cut_pages(server, stub, pb, limit, event_size):
    """Appends 3 events of event_size; reads return 2, then the third; responses within limit."""
    stream = unique("cut")
    acks = [append(stub, stream, [event_data("Chunk", bytes([65 + i]) * event_size)]) for i in range(3)]
    get_raw = raw_method(server.channel(), "/api.EventStore/GetStream")
    glob_raw = raw_method(server.channel(), "/api.EventStore/GetGlobalStream")

    raw = get_raw(pb.GetStreamRequest(stream=stream).SerializeToString(), timeout=RPC_TIMEOUT)
    assert len(raw) <= limit
    page = pb.GetStreamResponse.FromString(raw).events
    assert [e.version for e in page] == [0, 1]
    assert [e.data[:1] for e in page] == [b"A", b"B"]
    rest = read_stream(stub, stream, version=2)
    assert [e.version for e in rest] == [2] and rest[0].data == b"C" * event_size

    first = acks[0].first_position
    wait_global(stub, acks[2].first_position)
    raw = glob_raw(pb.GetGlobalStreamRequest(offset=first - 1).SerializeToString(), timeout=RPC_TIMEOUT)
    assert len(raw) <= limit
    g = pb.GetGlobalStreamResponse.FromString(raw)
    assert [e.id for e in g.events] == [acks[0].events[0], acks[1].events[0]]
    assert g.checkpoint == g.events[-1].position
    g2 = read_global(stub, g.checkpoint, 0)
    assert g2.events and g2.events[0].id == acks[2].events[0]


def test_read_pages_are_cut_to_fit(server, stub, pb):
    _check_cut_pages(server, stub, pb, DEFAULT_MAX_MESSAGE, 1536 * 1024)


def test_max_message_size_is_configurable(server_factory, pb):
    limit = 1 * MIB
    s = server_factory.new(env={"MAX_MESSAGE_SIZE": "1M"})
    st = s.stub()
    expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, append, st, unique("m"),
                [event_data("Big", b"x" * (limit + 1024))])
    expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, append, st, unique("m"),
                [event_data("Big", b"x" * (limit - 100))])
    stream = unique("m")
    append(st, stream, [event_data("Ok", b"y" * (limit - 1024))])
    assert read_stream(st, stream)[0].data == b"y" * (limit - 1024)
    _check_cut_pages(s, st, pb, limit, 384 * 1024)


# ---- concurrency on one channel ----------------------------------------------------------

def test_many_concurrent_calls_on_one_channel(server, pb):
    ch = server.channel(own_connection=True)
    st = server.stub(ch)
    shared = unique("shared")
    singles = [unique("single") for _ in range(250)]
    count = event_count(st)

    futures = []
    for i in range(500):
        if i % 2 == 0:
            req = pb.AppendToStreamRequest(stream=shared, version=-1,
                                           events=[event_data("C", b"%d" % i)])
        else:
            req = pb.AppendToStreamRequest(stream=singles[i // 2], version=0,
                                           events=[event_data("C", b"%d" % i)])
        futures.append((i, st.AppendToStream.future(req, timeout=120)))
    reads = [st.GetStream.future(pb.GetStreamRequest(stream=shared), timeout=120) for _ in range(50)]

    positions, shared_ids = set(), {}
    for i, f in futures:
        r = f.result()
        assert len(r.events) == 1
        assert r.first_position not in positions
        positions.add(r.first_position)
        if i % 2 == 0:
            shared_ids[r.events[0]] = (r.first_version, b"%d" % i)
        else:
            assert r.first_version == 0
    for f in reads:
        assert len(f.result().events) <= 250

    got = read_stream(st, shared)
    assert [e.version for e in got] == list(range(250))
    assert {e.id: (e.version, e.data) for e in got} == shared_ids
    for name in singles[:20]:
        assert len(read_stream(st, name)) == 1
    assert event_count(st) == count + 500


def test_client_side_deadline_is_accepted(stub, pb):
    """A real client's grpc-timeout header does not disturb a normal call."""
    stream = unique("dl")
    r = append(stub, stream, 1, timeout=5)
    assert r.first_version == 0
    got = stub.GetStream(pb.GetStreamRequest(stream=stream), timeout=5).events
    assert [e.id for e in got] == list(r.events)


def test_ids_are_unique_across_many_appends(stub):
    stream = unique("uuid")
    ids = []
    for _ in range(20):
        ids += list(append(stub, stream, 50).events)
    assert len(set(ids)) == len(ids) == 1000
    assert all(uuid.UUID(i).version == 7 for i in ids)
