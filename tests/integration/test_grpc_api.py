"""
The api.EventStore contract over a real gRPC client: appends, optimistic
concurrency, ids and idempotent retries, validation, reads and paging,
counts, stream listing. One server for the module (SHARDS=2, SYNC=none)
unless a test needs its own; every test uses its own stream names.
"""

import re
import threading
import time
import uuid

import grpc
import pytest

from conftest import (
    PAGE_SIZE, RPC_TIMEOUT, UUID7_RE, append, event_count, event_data, expect_code,
    list_streams, list_streams_all, now_ms, read_global, read_global_all, read_stream,
    read_stream_all, server_version, shard_of, stream_count, unique, uuid7_ms,
    wait_global,
)

CLOCK_SLACK_MS = 5 * 60 * 1000


def test_version_is_a_non_empty_string(stub):
    v = server_version(stub)
    assert isinstance(v, str) and v.strip(), f"Version returned {v!r}"


def test_append_to_new_stream_then_read_back(stub, pb):
    stream = unique("order")
    before = now_ms()
    events = [
        event_data("OrderPlaced", b'{"total":12}', b'{"user":"u1"}'),
        event_data("ItemAdded", b"\x00\x01\x02\xff", b""),
        event_data("OrderShipped", b"", b"\xfe"),
    ]
    resp = append(stub, stream, events, version=0)
    after = now_ms()

    assert resp.first_version == 0
    assert resp.first_position >= 1
    assert len(resp.events) == 3
    assert len(set(resp.events)) == 3
    for eid in resp.events:
        assert UUID7_RE.match(eid), f"generated id {eid!r} is not a lowercase UUIDv7"
        assert before - CLOCK_SLACK_MS <= uuid7_ms(eid) <= after + CLOCK_SLACK_MS

    got = read_stream(stub, stream)
    assert [e.version for e in got] == [0, 1, 2]
    assert [e.position for e in got] == [resp.first_position + i for i in range(3)]
    assert [e.id for e in got] == list(resp.events)
    for e, sent in zip(got, events):
        assert e.stream == stream
        assert e.type == sent.type
        assert e.data == sent.data
        assert e.metadata == sent.metadata
        assert e.causation_id == e.id, "causation_id defaults to the event id"
        assert e.correlation_id == e.id, "correlation_id defaults to the event id"
        assert before - CLOCK_SLACK_MS <= e.added_at <= after + CLOCK_SLACK_MS

    # GetEvent returns the very same event.
    for e in got:
        assert stub.GetEvent(pb.GetEventRequest(id=e.id), timeout=RPC_TIMEOUT) == e


def test_expected_versions_chain_and_mismatch_is_aborted(stub):
    stream = unique("acct")
    r0 = append(stub, stream, 2, version=0)
    assert r0.first_version == 0
    r1 = append(stub, stream, 1, version=2)
    assert r1.first_version == 2
    assert r1.first_position > r0.first_position + 1
    assert len(read_stream(stub, stream)) == 3

    # Expected 7, actual length 3: both numbers are named.
    details = expect_code(grpc.StatusCode.ABORTED, append, stub, stream, 1, version=7)
    assert re.search(r"\b7\b", details) and re.search(r"\b3\b", details), \
        f"ABORTED message should name expected 7 and actual 3: {details!r}"
    # Expected 0 on an existing stream (a "create" that lost): aborted too.
    details = expect_code(grpc.StatusCode.ABORTED, append, stub, stream, 1, version=0)
    assert re.search(r"\b0\b", details) and re.search(r"\b3\b", details), details
    # Expected a version on a stream that does not exist.
    other = unique("missing")
    details = expect_code(grpc.StatusCode.ABORTED, append, stub, other, 1, version=4)
    assert re.search(r"\b4\b", details) and re.search(r"\b0\b", details), details
    assert read_stream(stub, other) == []
    # Nothing was written by the failed appends.
    assert [e.version for e in read_stream(stub, stream)] == [0, 1, 2]


def test_any_version_appends_at_the_end(stub):
    stream = unique("any")
    a = append(stub, stream, 2, version=-1)
    b = append(stub, stream, 3, version=-1)
    assert a.first_version == 0
    assert b.first_version == 2
    assert [e.version for e in read_stream(stub, stream)] == [0, 1, 2, 3, 4]


def test_consecutive_positions_within_one_append(stub):
    stream = unique("pos")
    r = append(stub, stream, 25)
    got = read_stream(stub, stream)
    assert [e.position for e in got] == list(range(r.first_position, r.first_position + 25))
    assert [e.version for e in got] == list(range(25))


def test_client_ids_are_kept_and_lowercased(stub, pb):
    stream = unique("ids")
    upper = str(uuid.uuid4()).upper()
    lower = str(uuid.uuid4())
    cause = str(uuid.uuid4()).upper()
    corr = str(uuid.uuid4())
    own = str(uuid.uuid4())
    r = append(stub, stream, [
        event_data(id=upper, causation_id=cause, correlation_id=corr),
        event_data(id=lower),
        # Its causation id is its own, its correlation id another: stored whole.
        event_data(id=own, causation_id=own.upper(), correlation_id=corr),
    ], version=0)
    assert list(r.events) == [upper.lower(), lower, own]
    got = read_stream(stub, stream)
    assert got[0].id == upper.lower()
    assert got[0].causation_id == cause.lower()
    assert got[0].correlation_id == corr
    assert got[1].id == lower
    assert got[1].causation_id == lower and got[1].correlation_id == lower
    assert got[2].causation_id == own and got[2].correlation_id == corr
    # Stored short (both ids its own) or whole, every read hands over the same event.
    for e in got:
        assert stub.GetEvent(pb.GetEventRequest(id=e.id), timeout=RPC_TIMEOUT) == e
        page = stub.GetGlobalStream(pb.GetGlobalStreamRequest(offset=e.position - 1, limit=1),
                                    timeout=RPC_TIMEOUT)
        assert list(page.events) == [e]
    # Look-ups accept any case.
    assert stub.GetEvent(pb.GetEventRequest(id=upper), timeout=RPC_TIMEOUT).id == upper.lower()
    assert stub.GetEvent(pb.GetEventRequest(id=upper.lower()), timeout=RPC_TIMEOUT) == got[0]


def test_idempotent_retry_writes_nothing(stub):
    stream = unique("retry")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    events = [event_data(id=i, data=b'{"k":%d}' % n) for n, i in enumerate(ids)]
    append(stub, stream, 2, version=0)  # the retried append does not start the stream
    first = append(stub, stream, events, version=2)
    count = event_count(stub)
    streams = stream_count(stub)

    again = append(stub, stream, events, version=2)  # the same request, replayed
    assert again.first_version == first.first_version == 2
    assert again.first_position == first.first_position
    assert list(again.events) == ids
    again_any = append(stub, stream, events, version=-1)
    assert (again_any.first_version, again_any.first_position) == (2, first.first_position)

    assert event_count(stub) == count
    assert stream_count(stub) == streams
    got = read_stream(stub, stream)
    assert [e.version for e in got] == [0, 1, 2, 3, 4]
    assert [e.id for e in got[2:]] == ids


def test_nul_in_strings_is_invalid_argument(stub):
    # protobuf-c keeps strings without their length: a NUL must be refused,
    # never cut the name or type short.
    prefix = unique("nul")
    count = event_count(stub)
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, append, stub, prefix + "\0tail",
                [event_data("T")])
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, append, stub, prefix,
                [event_data("A\0B")])
    assert event_count(stub) == count
    assert read_stream(stub, prefix) == []


def test_reused_ids_otherwise_already_exists(stub):
    stream = unique("dup")
    ids = [str(uuid.uuid4()) for _ in range(2)]
    append(stub, stream, [event_data(id=i) for i in ids], version=0)
    count = event_count(stub)

    # Same ids on another stream.
    other = unique("dup-other")
    expect_code(grpc.StatusCode.ALREADY_EXISTS, append, stub, other,
                [event_data(id=i) for i in ids])
    # Same ids, another order.
    expect_code(grpc.StatusCode.ALREADY_EXISTS, append, stub, stream,
                [event_data(id=i) for i in reversed(ids)])
    # A stored id together with a new one.
    expect_code(grpc.StatusCode.ALREADY_EXISTS, append, stub, stream,
                [event_data(id=ids[0]), event_data(id=str(uuid.uuid4()))])
    expect_code(grpc.StatusCode.ALREADY_EXISTS, append, stub, stream,
                [event_data(id=str(uuid.uuid4())), event_data(id=ids[1])])

    assert event_count(stub) == count
    assert read_stream(stub, other) == []
    assert [e.id for e in read_stream(stub, stream)] == ids


def test_one_id_sent_to_many_streams_at_once_is_stored_once(server_factory, pb):
    """Appends racing with one new client id, to streams of both shards: one wins each round.

    SYNC=full, so that each shard's commit is slow enough for the other shard to decide the
    same id meanwhile: a server that checks ids against committed data only stores it twice.
    """
    stub = server_factory.new(env={"SYNC": "full"}).stub()
    rounds, racers = 30, 8
    count = event_count(stub)
    winners = []
    for _ in range(rounds):
        event_id = str(uuid.uuid4())
        streams = [unique("race") for _ in range(racers)]
        calls = [stub.AppendToStream.future(
                     pb.AppendToStreamRequest(stream=s, version=-1, events=[event_data(id=event_id)]),
                     timeout=RPC_TIMEOUT) for s in streams]
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        assert codes.count(grpc.StatusCode.OK) == 1, codes
        assert codes.count(grpc.StatusCode.ALREADY_EXISTS) == racers - 1, codes
        winners.append((streams[codes.index(grpc.StatusCode.OK)], event_id))
    assert event_count(stub) == count + rounds
    for stream, event_id in winners:
        assert [e.id for e in read_stream(stub, stream)] == [event_id]


def _bad_requests():
    u = lambda: str(uuid.uuid4())  # noqa: E731
    dup = str(uuid.uuid4())
    return {
        "empty stream name": dict(stream=""),
        "reserved all": dict(stream="all"),
        "reserved count": dict(stream="count"),
        "reserved $": dict(stream="$x"),
        "reserved $ alone": dict(stream="$"),
        "name 201 bytes": dict(stream="n" * 201),
        "name 201 bytes multibyte": dict(stream="é" * 100 + "x"),
        "empty type": dict(events=[event_data(type_="")]),
        "type 201 bytes": dict(events=[event_data(type_="t" * 201)]),
        "bad id": dict(events=[event_data(id="not-a-uuid")]),
        "bad id hex": dict(events=[event_data(id="zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz")]),
        "short id": dict(events=[event_data(id=u()[:-1])]),
        "long id": dict(events=[event_data(id=u() + "0")]),
        "nil id": dict(events=[event_data(id="00000000-0000-0000-0000-000000000000")]),
        "bad causation_id": dict(events=[event_data(causation_id="nope")]),
        "bad correlation_id": dict(events=[event_data(correlation_id="1234")]),
        "duplicate ids in one append": dict(events=[event_data(id=dup), event_data(id=dup)]),
        "duplicate ids differing in case": dict(events=[event_data(id=dup), event_data(id=dup.upper())]),
        "version -2": dict(version=-2),
        "version most negative": dict(version=-(2 ** 31)),
        "no events": dict(events=[]),
        "one bad event among good ones": dict(events=[event_data(), event_data(type_=""), event_data()]),
    }


BAD = _bad_requests()


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_append_is_invalid_argument(stub, pb, case):
    req = dict(stream=unique("valid"), version=-1, events=[event_data()])
    req.update(BAD[case])
    count, streams = event_count(stub), stream_count(stub)
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, stub.AppendToStream,
                pb.AppendToStreamRequest(**req))
    assert event_count(stub) == count
    assert stream_count(stub) == streams


def test_limits_are_inclusive(stub):
    name = unique("n")
    name += "x" * (200 - len(name.encode()))
    assert len(name.encode()) == 200
    r = append(stub, name, [event_data(type_="t" * 200)], version=0)
    got = read_stream(stub, name)
    assert len(got) == 1 and got[0].stream == name and got[0].type == "t" * 200
    assert got[0].id == r.events[0]
    # 200 bytes of multibyte characters.
    mb = "é" * 100
    append(stub, mb, 1)
    assert read_stream(stub, mb)[0].stream == mb


def test_unicode_stream_name(stub, pb):
    stream = "compte-été-🚀-" + uuid.uuid4().hex[:8]
    r = append(stub, stream, [event_data("Ouvert", "données: ✓".encode())], version=0)
    got = read_stream(stub, stream)
    assert len(got) == 1
    assert got[0].stream == stream
    assert got[0].type == "Ouvert"
    assert got[0].data == "données: ✓".encode()
    assert stub.GetEvent(pb.GetEventRequest(id=r.events[0]), timeout=RPC_TIMEOUT).stream == stream
    assert stream in list_streams_all(stub)


def test_get_event_errors(stub, pb):
    expect_code(grpc.StatusCode.NOT_FOUND, stub.GetEvent, pb.GetEventRequest(id=str(uuid.uuid4())))
    for bad in ("xyz", "", "00000000-0000-0000-0000-00000000000g", str(uuid.uuid4()) + "-"):
        expect_code(grpc.StatusCode.INVALID_ARGUMENT, stub.GetEvent, pb.GetEventRequest(id=bad))


def test_get_stream_from_version_and_limit(stub):
    stream = unique("page")
    append(stub, stream, 10, version=0)
    assert [e.version for e in read_stream(stub, stream, version=4, limit=3)] == [4, 5, 6]
    assert [e.version for e in read_stream(stub, stream, version=7)] == [7, 8, 9]
    assert [e.version for e in read_stream(stub, stream, version=0, limit=1)] == [0]
    assert read_stream(stub, stream, version=10) == []
    assert read_stream(stub, stream, version=2 ** 32 - 1) == []
    assert read_stream(stub, unique("never-written")) == []
    # The events read in pieces are the events read at once.
    whole = read_stream(stub, stream)
    pieces = []
    while len(pieces) < 10:
        pieces += read_stream(stub, stream, version=len(pieces), limit=3)
    assert pieces == whole


def test_global_stream_reads_after_offset(stub):
    streams = [unique("g") for _ in range(4)]
    acks = [append(stub, s, 3, version=0) for s in streams]
    lowest = min(a.first_position for a in acks)
    highest = max(a.first_position + 2 for a in acks)

    events = read_global_all(stub, offset=lowest - 1, expect_at_least=highest - lowest + 1)
    ours = {e.position: e for e in events if e.stream in streams}
    for a, s in zip(acks, streams):
        for i in range(3):
            e = ours[a.first_position + i]
            assert (e.stream, e.version, e.id) == (s, i, a.events[i])
    # The event at the offset itself is excluded; the next one is first.
    resp = read_global(stub, lowest, 1)
    assert len(resp.events) == 1 and resp.events[0].position > lowest
    assert resp.checkpoint == resp.events[0].position
    # Past the end: no events, checkpoint echoes the offset.
    far = 2 ** 62
    resp = read_global(stub, far)
    assert list(resp.events) == [] and resp.checkpoint == far
    # GetGlobalStream events equal GetStream events, field for field.
    for s in streams:
        for e in read_stream(stub, s):
            assert ours[e.position] == e


def test_acknowledged_appends_are_in_the_global_stream_at_once(server):
    """
    Read-your-writes: as soon as an append is acknowledged, a global read from
    just before its position returns it, while other writers keep both shards
    committing (another shard's commit in flight must not hide it).
    """
    errors = []

    def writer(k):
        stub = server.stub(server.channel(own_connection=True))
        for i in range(150):
            ack = append(stub, unique(f"ryw{k}-"), 1)
            page = read_global(stub, ack.first_position - 1, 1)
            got = page.events[0].position if page.events else None
            if got != ack.first_position:
                errors.append(f"writer {k} append {i}: acknowledged at {ack.first_position}, "
                              f"the global read from {ack.first_position - 1} gave {got}")
                return

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "writers did not finish in 120 s"
    assert not errors, errors[:3]


def test_global_stream_limits(stub):
    r = append(stub, unique("gl"), 5)
    wait_global(stub, r.first_position + 4)
    resp = read_global(stub, 0, 3)
    assert len(resp.events) == 3
    assert resp.checkpoint == resp.events[-1].position
    assert len(read_global(stub, 0, 0).events) <= PAGE_SIZE
    assert len(read_global(stub, 0, PAGE_SIZE * 5).events) <= PAGE_SIZE


def test_counts_are_exact(stub):
    events, streams = event_count(stub), stream_count(stub)
    a, b = unique("c"), unique("c")
    append(stub, a, 3)
    append(stub, a, 2)
    append(stub, b, 4)
    assert event_count(stub) == events + 9
    assert stream_count(stub) == streams + 2
    # Failed appends change nothing.
    with pytest.raises(grpc.RpcError):
        append(stub, a, 1, version=0)
    assert event_count(stub) == events + 9
    assert stream_count(stub) == streams + 2


def test_list_streams_byte_order_skip_limit(stub):
    made = [unique("ls") for _ in range(5)] + ["Zeta-" + uuid.uuid4().hex[:6], "é-" + uuid.uuid4().hex[:6],
                                                "🚀-" + uuid.uuid4().hex[:6], "_-" + uuid.uuid4().hex[:6]]
    for s in made:
        append(stub, s, 1)
    names = list_streams_all(stub)
    assert len(names) == len(set(names)), "duplicate names listed"
    assert names == sorted(names, key=lambda n: n.encode()), "not in byte order"
    assert set(made) <= set(names)
    assert len(names) == stream_count(stub)
    # Pages of 3 (skip/limit) give the same list.
    paged = []
    while True:
        page = list_streams(stub, skip=len(paged), limit=3)
        assert len(page) <= 3
        if not page:
            break
        paged += page
    assert paged == names
    assert list_streams(stub, skip=len(names)) == []
    assert list_streams(stub, skip=2 ** 32 - 1) == []
    assert list_streams(stub, skip=1, limit=2) == names[1:3]


def test_limit_zero_or_huge_means_page_size(stub):
    stream = unique("many")
    append(stub, stream, PAGE_SIZE + 50)
    assert len(read_stream(stub, stream, limit=0)) == PAGE_SIZE
    assert len(read_stream(stub, stream, limit=PAGE_SIZE + 1)) == PAGE_SIZE
    assert len(read_stream(stub, stream, limit=2 ** 32 - 1)) == PAGE_SIZE
    assert len(read_stream(stub, stream, version=PAGE_SIZE)) == 50


def test_ten_thousand_events_in_one_append(stub):
    stream = unique("bulk")
    n = 10_000
    events = [event_data("Tick", b'{"i":%d}' % i) for i in range(n)]
    r = append(stub, stream, events, version=0, timeout=120)
    assert r.first_version == 0
    assert len(r.events) == n and len(set(r.events)) == n
    pages = []
    version = 0
    while True:
        page = read_stream(stub, stream, version=version)
        if not page:
            break
        pages.append(len(page))
        for i, e in enumerate(page):
            assert e.version == version + i
            assert e.position == r.first_position + version + i
            assert e.data == b'{"i":%d}' % (version + i)
            assert e.id == r.events[version + i]
        version += len(page)
    assert pages == [PAGE_SIZE] * (n // PAGE_SIZE)
    assert version == n


def test_optimistic_concurrency_race(server):
    stream = unique("race")
    threads_n, rounds = 8, 20
    stubs = [server.stub(server.channel(own_connection=True)) for _ in range(threads_n)]
    barrier = threading.Barrier(threads_n, timeout=60)
    results = [[None] * threads_n for _ in range(rounds)]
    errors = []

    def worker(k):
        try:
            for v in range(rounds):
                barrier.wait()
                try:
                    append(stubs[k], stream, [event_data("Won", b"%d/%d" % (v, k))], version=v)
                    results[v][k] = "ok"
                except grpc.RpcError as e:
                    results[v][k] = e.code()
                # Everyone has answered before the next round starts.
                barrier.wait()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "race workers hung"
    assert not errors, errors

    for v, row in enumerate(results):
        winners = [k for k, r in enumerate(row) if r == "ok"]
        assert len(winners) == 1, f"version {v}: winners {winners}, results {row}"
        losers = [r for r in row if r != "ok"]
        assert all(r == grpc.StatusCode.ABORTED for r in losers), f"version {v}: {row}"

    got = read_stream_all(stubs[0], stream)
    assert [e.version for e in got] == list(range(rounds))
    for v, e in enumerate(got):
        winner = next(k for k, r in enumerate(results[v]) if r == "ok")
        assert e.data == b"%d/%d" % (v, winner)


def test_global_paging_limit_one_visits_every_event_once(server_factory, pb):
    s = server_factory.new(env={"SHARDS": "2"})
    stub = s.stub()
    streams = [f"p-{i}" for i in range(24)]
    assert {shard_of(n, 2) for n in streams} == {0, 1}, "the streams must live on both shards"
    acked = {}
    for round_ in range(2):
        for name in streams:
            r = append(stub, name, 1 + (round_ + len(name)) % 3)
            for i, eid in enumerate(r.events):
                acked[eid] = r.first_position + i
    total = event_count(stub)
    assert total == len(acked)
    seen_ids, positions = [], []
    offset = 0
    deadline = time.monotonic() + 20
    while len(seen_ids) < total:
        resp = read_global(stub, offset, 1)
        if not resp.events:
            assert resp.checkpoint == offset
            assert time.monotonic() < deadline, f"stuck at {offset} after {len(seen_ids)}/{total}"
            time.sleep(0.02)
            continue
        assert len(resp.events) == 1
        e = resp.events[0]
        assert e.position > offset
        assert resp.checkpoint == e.position
        seen_ids.append(e.id)
        positions.append(e.position)
        offset = resp.checkpoint
    assert list(read_global(stub, offset, 1).events) == []
    assert len(set(seen_ids)) == len(seen_ids) == total
    assert positions == sorted(positions)
    assert {i: p for i, p in zip(seen_ids, positions)} == acked
    # Same answer as one big page.
    assert [e.id for e in read_global_all(stub, 0, expect_at_least=total)] == seen_ids
