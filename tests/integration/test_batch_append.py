"""
BatchAppend (a bidirectional gRPC stream of appends) against the real server
binary: many appends pipelined on one call with valid and invalid ones mixed
(one response per correlation id, each with the outcome AppendToStream would
give, versions per stream in the order sent, counts that add up), a message
that cannot be decoded ends the call with INVALID_ARGUMENT, and a client that
half-closes with appends outstanding gets every response, then OK. On
SIGTERM an open call gets every append the server read answered, then
UNAVAILABLE, and the store holds exactly the acknowledged appends.

One server for the module (SHARDS=2, SYNC=none) unless a test needs its own.

Sizes (environment knobs):
    EVF_BATCH_APPENDS  appends pipelined on one call (default 100000)
    EVF_SEED           seed of the random mix (default: random, printed on failure)
"""

import os
import queue
import random
import signal
import time
import uuid

import grpc
import pytest

from conftest import (
    RPC_TIMEOUT, STOP_TIMEOUT, UUID_RE, RawH2, event_count, event_data, failing_sends_env,
    grpc_frame, header_block, http_read_global, identity, raw_frames_until_closed, raw_messages,
    read_stream_all, unique, wait_http_ready,
)

SEED = int(os.environ.get("EVF_SEED") or random.randrange(1 << 30))
BATCH_APPENDS = int(os.environ.get("EVF_BATCH_APPENDS") or 100_000)
CALL_TIMEOUT = 240.0
BATCH_METHOD = "/api.EventStore/BatchAppend"


@pytest.fixture(autouse=True)
def _seed():
    """Shown with a failure's captured output: EVF_SEED=<this> replays the same random choices."""
    print(f"EVF_SEED={SEED}")

OK_ = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]  # 3
ABORTED = grpc.StatusCode.ABORTED.value[0]  # 10
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]  # 6


def batch_request(pb, cid, stream, events, version=-1):
    return pb.BatchAppendRequest(correlation_id=cid, append=pb.AppendToStreamRequest(
        stream=stream, version=version, events=events))


class Plan:
    """Requests to send and, per correlation id, the outcome AppendToStream would give in that order."""

    def __init__(self):
        self.requests = []
        self.expect = {}  # cid -> ("ok", stream, first_version, n_events, ids or None, position or None) | ("err", code, why)
        self.order = []

    def ok(self, req, stream, first_version, n, ids=None, position=None):
        self.requests.append(req)
        self.order.append(req.correlation_id)
        self.expect[req.correlation_id] = ("ok", stream, first_version, n, ids, position)

    def err(self, req, code, why):
        self.requests.append(req)
        self.order.append(req.correlation_id)
        self.expect[req.correlation_id] = ("err", code, why)


def check_responses(plan, responses, label):
    """Exactly one response per correlation id, each with its expected outcome. Returns {cid: response}."""
    got, dups = {}, []
    for r in responses:
        if r.correlation_id in got:
            dups.append(r.correlation_id)
        got[r.correlation_id] = r
    assert not dups, f"{label}: {len(dups)} correlation ids answered twice, e.g. {dups[:5]}"
    unknown = set(got) - set(plan.expect)
    missing = [c for c in plan.order if c not in got]
    assert not unknown, f"{label}: responses for correlation ids never sent: {sorted(unknown)[:5]}"
    assert not missing, f"{label}: {len(missing)} of {len(plan.order)} requests got no response, e.g. {missing[:5]}"
    bad = []
    for cid in plan.order:
        r, e = got[cid], plan.expect[cid]
        which = r.WhichOneof("result")
        if e[0] == "err":
            if which != "error" or r.error.code != e[1] or not r.error.message:
                bad.append(f"cid {cid} ({e[2]}): want error code {e[1]} with a message, got {r}")
            continue
        _, stream, first_version, n, ids, position = e
        if which != "success":
            bad.append(f"cid {cid} (append of {n} to {stream}, expect version {first_version}): got {r}")
            continue
        s = r.success
        if s.first_version != first_version or len(s.events) != n or s.first_position < 1:
            bad.append(f"cid {cid} ({stream}): want first_version {first_version}, {n} ids; got {s}")
        elif ids is not None and list(s.events) != [i.lower() for i in ids]:
            bad.append(f"cid {cid}: ids {list(s.events)}, sent {ids}")
        elif ids is None and not all(UUID_RE.match(i) for i in s.events):
            bad.append(f"cid {cid}: generated ids {list(s.events)}")
        elif position is not None and s.first_position != position:
            bad.append(f"cid {cid}: an exact retry answered first_position {s.first_position}, want {position}")
    assert not bad, f"{label}: {len(bad)} wrong outcomes:\n" + "\n".join(bad[:10])
    return got


def check_stream_order(plan, got, stub, streams, label):
    """Per stream: the successes in the order sent hold consecutive versions, ascending positions, and the store agrees."""
    per = {s: [] for s in streams}
    for cid in plan.order:
        e = plan.expect[cid]
        if e[0] == "ok" and e[1] in per and e[5] is None:
            per[e[1]].append(got[cid].success)
    for s, acks in per.items():
        stored = read_stream_all(stub, s)
        versions = [a.first_version for a in acks]
        positions = [a.first_position for a in acks]
        assert positions == sorted(positions) and len(set(positions)) == len(positions), \
            f"{label}: {s}: positions not ascending in the order sent: {positions[:20]}"
        v = 0
        for a in acks:
            assert a.first_version == v, f"{label}: {s}: versions in the order sent: {versions[:20]}"
            for k, eid in enumerate(a.events):
                ev = stored[v + k] if v + k < len(stored) else None
                assert ev is not None and ev.id == eid and ev.position == a.first_position + k, \
                    f"{label}: {s} version {v + k}: stored {ev}, acknowledged id {eid} at {a.first_position + k}"
            v += len(a.events)
        assert len(stored) == v, f"{label}: {s} holds {len(stored)} events, the successes add up to {v}"


# --------------------------------------------------------------------------
# Many appends pipelined, valid and invalid mixed
# --------------------------------------------------------------------------

def test_pipelined_mixed_appends(server, stub, pb):
    rng = random.Random(SEED)
    tag = unique("ba")
    pool = [f"{tag}-{i}" for i in range(64)]
    # Set up before the call, so their outcomes do not depend on ordering across streams:
    # ids that are already stored (reusing one elsewhere is ALREADY_EXISTS) and an append
    # to retry exactly (it succeeds again without writing).
    pre_ids = [str(uuid.uuid4()) for _ in range(20)]
    stub.AppendToStream(pb.AppendToStreamRequest(stream=f"{tag}-pre", version=0,
                                                 events=[event_data(id=i) for i in pre_ids]), timeout=RPC_TIMEOUT)
    retry_events = [event_data("Retried", b"r%d" % k, id=str(uuid.uuid4())) for k in range(3)]
    retry = stub.AppendToStream(pb.AppendToStreamRequest(stream=f"{tag}-retry", version=0, events=retry_events),
                                timeout=RPC_TIMEOUT)
    count_before = event_count(stub)

    predicted = {s: 0 for s in pool}
    plan = Plan()
    bad_names = ["", "n" * 201, "é" * 100 + "x", "$x", "all", "count"]
    base = 1 << 40  # correlation ids use the full uint64 width, not 1, 2, 3
    for i in range(BATCH_APPENDS):
        cid = base + i * 7 + rng.randrange(7)
        stream = rng.choice(pool)
        x = rng.random()
        if x < 0.70:
            n = rng.randint(1, 3)
            ids = [str(uuid.uuid4()).upper() if rng.random() < 0.5 else str(uuid.uuid4()) for _ in range(n)] \
                if rng.random() < 0.2 else None
            events = [event_data(f"T{rng.randrange(4)}", b'{"i":%d}' % i, id=ids[k] if ids else "")
                      for k in range(n)]
            version = -1 if rng.random() < 0.5 else predicted[stream]
            plan.ok(batch_request(pb, cid, stream, events, version), stream, predicted[stream], n, ids)
            predicted[stream] += n
        elif x < 0.77:
            wrong = predicted[stream] + 1 + rng.randrange(3)
            if predicted[stream] and rng.random() < 0.5:
                wrong = rng.randrange(predicted[stream])
            plan.err(batch_request(pb, cid, stream, [event_data()], wrong), ABORTED,
                     f"expected version {wrong} of {stream}, actual {predicted[stream]}")
        elif x < 0.82:
            name = rng.choice(bad_names)
            plan.err(batch_request(pb, cid, name, [event_data()]), INVALID, f"stream name {name!r}")
        elif x < 0.86:
            plan.err(batch_request(pb, cid, stream, []), INVALID, "no events")
        elif x < 0.89:
            plan.err(batch_request(pb, cid, stream, [event_data(), event_data(type_="")]), INVALID, "empty type")
        elif x < 0.895:
            plan.err(pb.BatchAppendRequest(correlation_id=cid), INVALID, "no append in the request")
        elif x < 0.91:
            dup = str(uuid.uuid4())
            plan.err(batch_request(pb, cid, stream, [event_data(id=dup), event_data(id=dup)]), INVALID,
                     "one id twice in an append")
        elif x < 0.98:
            reused = rng.choice(pre_ids)
            plan.err(batch_request(pb, cid, stream, [event_data(id=str(uuid.uuid4())), event_data(id=reused)]),
                     ALREADY_EXISTS, f"event id {reused} already stored elsewhere")
        else:
            plan.ok(batch_request(pb, cid, f"{tag}-retry", retry_events, 0), f"{tag}-retry", 0, 3,
                    [e.id for e in retry_events], retry.first_position)

    t0 = time.monotonic()
    call = stub.BatchAppend(iter(plan.requests), timeout=CALL_TIMEOUT)
    responses = list(call)
    elapsed = time.monotonic() - t0
    assert call.code() == OK_, f"the call ended with {call.code()} {call.details()!r} after {len(responses)} responses"
    got = check_responses(plan, responses, "pipelined")
    check_stream_order(plan, got, stub, pool, "pipelined")

    written = sum(e[3] for e in plan.expect.values() if e[0] == "ok" and e[5] is None)
    positions = [got[c].success.first_position + k for c, e in plan.expect.items()
                 if e[0] == "ok" and e[5] is None for k in range(e[3])]
    assert len(set(positions)) == len(positions) == written, "a global position was handed out twice"
    assert event_count(stub) - count_before == written, \
        f"EventCount moved by {event_count(stub) - count_before}, the successes wrote {written}"
    assert [e.id for e in read_stream_all(stub, f"{tag}-retry")] == [e.id for e in retry_events]
    assert [e.id for e in read_stream_all(stub, f"{tag}-pre")] == pre_ids
    kinds = {}
    for e in plan.expect.values():
        kinds[e[0] if e[0] == "ok" else e[1]] = kinds.get(e[0] if e[0] == "ok" else e[1], 0) + 1
    print(f"\nBatchAppend: {BATCH_APPENDS} appends ({kinds}) in {elapsed:.1f} s, "
          f"{BATCH_APPENDS / elapsed:.0f}/s, {written} events")


# --------------------------------------------------------------------------
# A message that cannot be decoded
# --------------------------------------------------------------------------

GARBAGE = {
    "tag varint too long": b"\xff" * 11,
    "invalid wire type": b"\x0f",
    "truncated length-delimited field": b"\x12\x10\x0a",
    "undecodable nested append": b"\x08\x01\x12\x02\xff\xff",
}


@pytest.mark.parametrize("case", list(GARBAGE))
@pytest.mark.parametrize("where", ["alone", "between valid appends"])
def test_undecodable_message_ends_the_call_invalid_argument(server, stub, pb, case, where):
    channel = server.channel()
    call_raw = channel.stream_stream(BATCH_METHOD, request_serializer=identity, response_deserializer=identity)
    before, after = unique("before"), unique("after")
    msgs = [GARBAGE[case]]
    if where != "alone":
        msgs = ([batch_request(pb, 1, before, [event_data()]).SerializeToString()] + msgs +
                [batch_request(pb, 2, after, [event_data()]).SerializeToString()])
    responses = []
    call = call_raw(iter(msgs), timeout=RPC_TIMEOUT)
    try:
        for r in call:
            responses.append(pb.BatchAppendResponse.FromString(r))
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{case}: {e.code()} {e.details()!r}"
    else:
        pytest.fail(f"{case}: the call ended OK after an undecodable message; responses {responses}")
    assert all(r.correlation_id == 1 for r in responses), \
        f"only the append sent before the bad message may be answered: {responses}"
    assert read_stream_all(stub, after) == [], "an append sent after the undecodable message was applied"
    # The server goes on: a new call works.
    ok = list(stub.BatchAppend(iter([batch_request(pb, 9, unique("next"), [event_data()])]), timeout=RPC_TIMEOUT))
    assert len(ok) == 1 and ok[0].HasField("success"), ok


# --------------------------------------------------------------------------
# One request at a time: each answer comes before the next request
# --------------------------------------------------------------------------

def test_each_answer_comes_without_a_next_request(server, pb):
    """
    A client that waits for each answer before it sends the next request gets
    every answer, those the server gives at once (a bad stream name, no
    append) as well as the store's.
    """
    requests = queue.Queue()
    call = server.stub().BatchAppend(iter(requests.get, None), timeout=RPC_TIMEOUT)
    cases = [("a valid append", batch_request(pb, 1, unique("one"), [event_data()]), "success"),
             ("an empty stream name", batch_request(pb, 2, "", [event_data()]), "error"),
             ("no append", pb.BatchAppendRequest(correlation_id=3), "error"),
             ("a valid append again", batch_request(pb, 4, unique("two"), [event_data()]), "success")]
    try:
        for what, request, outcome in cases:
            requests.put(request)
            answer = next(call)
            assert (answer.correlation_id, answer.WhichOneof("result")) == \
                (request.correlation_id, outcome), f"{what}: {answer}"
    finally:
        requests.put(None)
    assert list(call) == [] and call.code() == OK_, f"{call.code()} {call.details()!r}"


# --------------------------------------------------------------------------
# A client that sends and does not read its answers
# --------------------------------------------------------------------------

def complete_messages(body):
    """How many whole gRPC messages body starts with."""
    count, at = 0, 0
    while at + 5 <= len(body) and at + 5 + int.from_bytes(body[at + 1:at + 5], "big") <= len(body):
        at += 5 + int.from_bytes(body[at + 1:at + 5], "big")
        count += 1
    return count


def test_a_client_that_does_not_read_is_held_back(server, pb):
    """
    A client sends appends on one call and reads none of the answers: the
    server takes about a megabyte of answers' worth, holds the client back
    with flow control (it could send all of them otherwise), and answers
    every one once the client reads.
    """
    n, stream = 60_000, unique("unread")
    pad = b"x" * 200
    frames = [grpc_frame(batch_request(pb, i, stream, [event_data(data=pad)]).SerializeToString())
              for i in range(n)]
    with RawH2(server.grpc_port, timeout=30) as raw:
        sid = raw.headers(BATCH_METHOD)
        sent, stalled_since = 0, None
        deadline = time.monotonic() + 120
        while sent < n and time.monotonic() < deadline:
            if raw.conn.local_flow_control_window(sid) >= len(frames[sent]):
                raw.conn.send_data(sid, frames[sent])
                sent += 1
                stalled_since = None
                continue
            raw.flush()
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 3:
                break  # no window for 3 s: held back
            raw.read_unacknowledged(time.monotonic() + 0.2)
        raw.flush()
        assert sent < n * 3 // 4, f"the server took {sent} of {n} appends without its answers being read"

        # Now it reads: what came unread first, then as it comes.
        raw.conn.acknowledge_received_data(len(raw.responses[sid].data), sid)
        raw.flush()
        answered = 0
        while answered < n:
            if sent < n and raw.conn.local_flow_control_window(sid) >= len(frames[sent]):
                raw.conn.send_data(sid, frames[sent], end_stream=sent == n - 1)
                sent += 1
                raw.flush()
                continue
            assert time.monotonic() < deadline, f"{answered} of {n} answered, {sent} sent"
            raw._receive_once(deadline)
            answered = complete_messages(raw.responses[sid].data)
        r = raw.response(sid, timeout=60)
    assert r.grpc_status == 0, r
    results = [pb.BatchAppendResponse.FromString(m) for m in r.messages()]
    assert sorted(a.correlation_id for a in results if a.HasField("success")) == list(range(n))


def test_a_held_call_that_ends_as_it_resumes(server_factory, pb):
    """
    A call held for its unread answers (all given at once: requests without
    an append, so none is in the store) resumes from the connection's write,
    meets a compressed message and ends: it must end once, UNIMPLEMENTED,
    and be freed once (a use after free under ASan before).
    """
    s = server_factory.new(env={"SHARDS": "1"})
    n = 40_000  # their answers pass 1 MiB: the call stops taking messages
    body = b"".join(grpc_frame(pb.BatchAppendRequest(correlation_id=i).SerializeToString())
                    for i in range(n)) + grpc_frame(b"\x08\x01", compressed=True)
    with RawH2(s.grpc_port, timeout=30) as raw:
        sid = raw.headers(BATCH_METHOD)
        sent, deadline = 0, time.monotonic() + 60
        while sent < len(body):  # reads, but gives no window back for the answers
            chunk = min(raw.conn.local_flow_control_window(sid), 16384, len(body) - sent)
            if chunk > 0:
                raw.conn.send_data(sid, body[sent:sent + chunk])
                sent += chunk
                continue
            assert time.monotonic() < deadline, f"{sent} of {len(body)} bytes sent"
            raw.flush()
            raw.read_unacknowledged(deadline)
        raw.conn.end_stream(sid)
        raw.flush()
        # Window for part of the answers, taken (the call stays held), then for all of them.
        response = raw.responses[sid]
        had = len(response.data)
        raw.conn.increment_flow_control_window(300 * 1024)
        raw.conn.increment_flow_control_window(300 * 1024, sid)
        raw.flush()
        while len(response.data) < had + 300 * 1024:
            assert time.monotonic() < deadline, f"{len(response.data) - had} bytes came"
            raw.read_unacknowledged(deadline)
        raw.conn.increment_flow_control_window(16 << 20)
        raw.conn.increment_flow_control_window(16 << 20, sid)
        raw.flush()
        r = raw.response(sid, timeout=60)
    assert r.grpc_status == grpc.StatusCode.UNIMPLEMENTED.value[0], r
    # Whole answers, in order; those still queued when the call failed are dropped.
    answers = [pb.BatchAppendResponse.FromString(m) for m in r.messages()]
    assert 0 < len(answers) <= n and [a.correlation_id for a in answers] == list(range(len(answers)))
    assert s.alive(), s.stderr_tail()


# --------------------------------------------------------------------------
# Messages as large as HTTP/2's windows
# --------------------------------------------------------------------------

def big_request(pb, cid, size):
    return batch_request(pb, cid, unique("big"), [event_data(data=os.urandom(size // 2).hex().encode())])


def test_a_message_larger_than_the_stream_window_arrives(server_factory, pb):
    """The server's stream window is 4 MiB; with MAX_MESSAGE_SIZE=16M a 6 MB append is taken."""
    s = server_factory.new(env={"MAX_MESSAGE_SIZE": "16M"})
    request = big_request(pb, 1, 6_000_000)
    answers = list(s.stub().BatchAppend(iter([request]), timeout=RPC_TIMEOUT))
    assert [(a.correlation_id, a.WhichOneof("result")) for a in answers] == [(1, "success")], answers
    assert read_stream_all(s.stub(), request.append.stream)[0].data == request.append.events[0].data


def send_interleaved(raw, bodies, timeout=60.0):
    """Sends each stream's body, 16 KiB of one after 16 KiB of the next, within flow control."""
    sent = {sid: 0 for sid in bodies}
    deadline = time.monotonic() + timeout
    while any(sent[sid] < len(body) for sid, body in bodies.items()):
        progressed = False
        for sid, body in bodies.items():
            n = min(raw.conn.local_flow_control_window(sid), 16384, len(body) - sent[sid])
            if n > 0:
                raw.conn.send_data(sid, body[sent[sid]:sent[sid] + n],
                                   end_stream=sent[sid] + n == len(body))
                sent[sid] += n
                progressed = True
        raw.flush()
        if not progressed:
            assert time.monotonic() < deadline, \
                f"no flow-control window left: sent {sent} of {[len(b) for b in bodies.values()]}"
            raw._receive_once(deadline)


def test_large_messages_on_many_calls_share_a_connection(server, pb):
    """
    Five calls on one connection send a 3.5 MB message each, interleaved: 17.5
    MB, more than the server's 16 MiB connection window, and no message is
    whole before the window is spent. Every call is answered, and the
    connection still serves another call.
    """
    with RawH2(server.grpc_port, timeout=30) as raw:
        bodies = {raw.headers(BATCH_METHOD): grpc_frame(big_request(pb, i, 3_500_000).SerializeToString())
                  for i in range(5)}
        send_interleaved(raw, bodies)
        for i, sid in enumerate(bodies):
            r = raw.response(sid, timeout=60)
            answers = [pb.BatchAppendResponse.FromString(m) for m in r.messages()]
            assert r.grpc_status == 0 and [(a.correlation_id, a.WhichOneof("result"))
                                           for a in answers] == [(i, "success")], r
        r = raw.call("/api.EventStore/Version", pb.VersionRequest().SerializeToString())
        assert r.grpc_status == 0, r


# --------------------------------------------------------------------------
# Half-close with appends outstanding
# --------------------------------------------------------------------------

def ordered_plan(pb, streams, n, cid0=1, pad=0):
    """n appends round-robin over streams, each with the exact expected version: out of order would be ABORTED."""
    plan = Plan()
    length = {s: 0 for s in streams}
    padding = b"x" * pad
    for i in range(n):
        s = streams[i % len(streams)]
        k = 1 + i % 3
        data = b'{"i":%d,"pad":"%s"}' % (i, padding)
        plan.ok(batch_request(pb, cid0 + i, s, [event_data("H", data) for _ in range(k)], length[s]),
                s, length[s], k)
        length[s] += k
    return plan


def test_half_close_with_appends_outstanding(server_factory, pb):
    """
    SYNC=full (every commit syncs) and BATCH_APPEND_IN_FLIGHT=16: when the client
    half-closes right after its last request, most appends are still to do. Every
    request gets its response, then the call ends OK.
    """
    s = server_factory.new(env={"SYNC": "full", "BATCH_APPEND_IN_FLIGHT": "16"})
    stub = s.stub()
    n = 300

    # A bare HTTP/2 client: every request and END_STREAM are written before anything is read.
    streams = [unique("raw") for _ in range(10)]
    plan = ordered_plan(pb, streams, n)
    body = b"".join(grpc_frame(r.SerializeToString()) for r in plan.requests)
    with RawH2(s.grpc_port, timeout=30) as raw:
        sid = raw.headers(BATCH_METHOD)
        raw.data(sid, body, end_stream=True, timeout=60)
        r = raw.response(sid, timeout=60)
    assert r.http_status == 200 and r.ended, r
    assert r.grpc_status == 0, f"after a half-close the call must end OK: {r!r}"
    responses = [pb.BatchAppendResponse.FromString(m) for m in r.messages()]
    got = check_responses(plan, responses, "raw half-close")
    check_stream_order(plan, got, stub, streams, "raw half-close")

    # The same with grpcio: the request iterator ends, the responses still all come.
    streams = [unique("grpcio") for _ in range(10)]
    plan = ordered_plan(pb, streams, n, cid0=1000)
    call = stub.BatchAppend(iter(plan.requests), timeout=CALL_TIMEOUT)
    responses = list(call)
    assert call.code() == OK_, f"{call.code()} {call.details()!r}"
    got = check_responses(plan, responses, "grpcio half-close")
    check_stream_order(plan, got, stub, streams, "grpcio half-close")


def test_a_call_whose_reply_cannot_be_sent_takes_no_more_appends(server_factory, pb):
    """
    BATCH_APPEND_IN_FLIGHT=1, and the server's sends fail from its first response on (fail_sends.c):
    the connection is lost, so the appends the call had not handed over yet stay unwritten. Their
    client gets no answer for them, and a retry must not find them stored.
    """
    s = server_factory.new(env={"SHARDS": "1", "BATCH_APPEND_IN_FLIGHT": "1",
                                **failing_sends_env(after_responses=1)}, start=False)
    s.spawn()
    wait_http_ready(s)  # over HTTP/1.1: a gRPC Version call would be the first response
    streams = [unique("lost") for _ in range(5)]
    body = b"".join(grpc_frame(batch_request(pb, i, stream, [event_data()]).SerializeToString())
                    for i, stream in enumerate(streams))
    with RawH2(s.grpc_port, timeout=30) as raw:
        sid = raw.headers(BATCH_METHOD)
        raw.data(sid, body, end_stream=True, timeout=30)
        raw_frames_until_closed(raw, STOP_TIMEOUT)
    stored = [e["stream"] for e in http_read_global(s, 0)["events"]]
    assert stored == streams[:1], f"stored {stored}; the call's first append only was handed over"


# --------------------------------------------------------------------------
# Shutdown with a call open
#
# Read with a bare HTTP/2 client, frame by frame: grpcio gives up the
# responses its application has not pulled yet once an error status has
# arrived, so it cannot show what the server sent before UNAVAILABLE.
# --------------------------------------------------------------------------

def raw_call_end(raw, sid, timeout=STOP_TIMEOUT, refused_ok=False):
    """
    After SIGTERM: (every gRPC message of the stream, its trailers, seconds
    until the server closed). refused_ok: the GOAWAY may say the stream was
    never processed (sent just before SIGTERM); then there is nothing at all.
    """
    t0 = time.monotonic()
    frames = raw_frames_until_closed(raw, timeout)
    closed_after = time.monotonic() - t0
    goaways = [int.from_bytes(f[3][0:4], "big") & 0x7FFFFFFF for f in frames if f[0] == 0x7]
    assert goaways, f"no GOAWAY after SIGTERM: {[(f[0], f[1], f[2]) for f in frames]}"
    if goaways[0] < sid:
        assert refused_ok, f"the GOAWAY cut off stream {sid}, which was open before SIGTERM"
        assert not [f for f in frames if f[2] == sid] and not raw.responses[sid].data
        return [], None, closed_after
    resp = raw.responses[sid]
    data = bytes(resp.data) + b"".join(f[3] for f in frames if f[0] == 0x0 and f[2] == sid)
    messages = raw_messages(type("R", (), {"data": data})())
    trailers = dict(resp.trailers)
    ends = [k for k, f in enumerate(frames) if f[0] == 0x1 and f[2] == sid and f[1] & 0x1]
    if ends:
        trailers = header_block(raw, frames, ends[0])
    return messages, trailers, closed_after


def send_what_fits(raw, sid, body):
    """Sends as much of body as flow control allows now; returns what is left."""
    body = memoryview(body)
    while body:
        window = min(raw.conn.local_flow_control_window(sid), raw.conn.max_outbound_frame_size)
        if window <= 0:
            break
        raw.conn.send_data(sid, bytes(body[:window]))
        body = body[window:]
    raw.flush()
    return bytes(body)


def stored_matches_successes(s, plan, successes, streams, label):
    """Restarted on the same data, the store holds exactly the acknowledged appends, in order."""
    s.start()
    sub_plan = Plan()
    for cid in plan.order:
        if cid in successes:
            _, stream, first, n, _, _ = plan.expect[cid]
            sub_plan.ok(plan.requests[cid - plan.order[0]], stream, first, n)
    check_stream_order(sub_plan, successes, s.stub(), streams, label)


def test_sigterm_answers_what_was_read_then_ends_unavailable(server_factory, pb):
    """
    SIGTERM while a client streams appends it never ends: the server reads no
    more, answers every append it took, then ends the call with UNAVAILABLE
    (not a dropped connection), well within the shutdown grace; what is stored
    is exactly what was acknowledged.
    """
    s = server_factory.new(env={"SYNC": "full", "BATCH_APPEND_IN_FLIGHT": "16"})
    streams = [unique("term") for _ in range(5)]
    plan = ordered_plan(pb, streams, 3000, pad=2000)  # about 12 MB: more than the 4 MiB window
    rest = b"".join(grpc_frame(r.SerializeToString()) for r in plan.requests)
    with RawH2(s.grpc_port, timeout=30) as raw:
        sid = raw.headers(BATCH_METHOD)
        deadline = time.monotonic() + 60
        while len(raw_messages(raw.responses[sid])) < 200:
            assert time.monotonic() < deadline, "no 200 responses within 60 s"
            rest = send_what_fits(raw, sid, rest)
            raw._receive_once(deadline)
        assert rest, "every request went out before SIGTERM: make the plan longer"
        s.proc.send_signal(signal.SIGTERM)
        messages, trailers, closed_after = raw_call_end(raw, sid)
    assert trailers.get("grpc-status") == "14" and "shutting down" in trailers.get("grpc-message", ""), \
        f"after SIGTERM the server must end the call itself with UNAVAILABLE: {trailers}"
    assert closed_after < 4.0, f"the connection closed {closed_after:.1f} s after SIGTERM (the grace is 5 s)"
    assert s.proc.wait(timeout=STOP_TIMEOUT) == 0
    assert s.stop(check=True) == 0
    responses = [pb.BatchAppendResponse.FromString(m) for m in messages]
    assert 200 <= len(responses) < len(plan.requests), len(responses)
    # Read while the store was closing: refused with UNAVAILABLE, and not stored.
    refused = [r for r in responses if r.WhichOneof("result") != "success"]
    assert all(r.error.code == grpc.StatusCode.UNAVAILABLE.value[0] for r in refused), refused[:3]
    successes = {r.correlation_id: r for r in responses if r.WhichOneof("result") == "success"}
    stored_matches_successes(s, plan, successes, streams, "after SIGTERM")


def test_sigterm_ends_an_idle_call_unavailable_at_once(server_factory, pb):
    """A BatchAppend call open with nothing sent yet ends UNAVAILABLE at SIGTERM, not at the grace's end."""
    s = server_factory.new()
    with RawH2(s.grpc_port, timeout=30) as raw:
        sid = raw.headers(BATCH_METHOD)
        # Frames of one connection are handled in order: once this later call is
        # answered, the server has opened the BatchAppend call.
        assert raw.call("/grpc.health.v1.Health/Check").grpc_status == 0
        s.proc.send_signal(signal.SIGTERM)
        messages, trailers, closed_after = raw_call_end(raw, sid)
    assert messages == []
    assert trailers.get("grpc-status") == "14" and "shutting down" in trailers.get("grpc-message", ""), \
        f"an idle call must be ended by the server at SIGTERM: {trailers}"
    assert closed_after < 4.0, f"the connection closed {closed_after:.1f} s after SIGTERM (the grace is 5 s)"
    assert s.proc.wait(timeout=STOP_TIMEOUT) == 0
    assert s.stop(check=True) == 0


def test_sigterm_after_the_half_close_still_ends_ok(server_factory, pb):
    """
    A client that sent everything and half-closed gets a result for every
    append it sent and OK, even when SIGTERM comes while appends are in
    flight (UNAVAILABLE would tell it to resend appends that may be stored).
    Where SIGTERM comes before the server read everything, the call ends
    UNAVAILABLE instead. Either way the store holds exactly the successes.
    Several rounds, SIGTERM at varying points.
    """
    complete = 0
    for round_ in range(6):
        s = server_factory.new(env={"SYNC": "full"})
        streams = [unique("hc") for _ in range(3)]
        plan = ordered_plan(pb, streams, 12)
        body = b"".join(grpc_frame(r.SerializeToString()) for r in plan.requests)
        with RawH2(s.grpc_port, timeout=30) as raw:
            sid = raw.headers(BATCH_METHOD)
            raw.data(sid, body, end_stream=True, timeout=30)
            if round_ % 2:
                deadline = time.monotonic() + 10
                while not raw_messages(raw.responses[sid]) and time.monotonic() < deadline:
                    raw._receive_once(deadline)
            s.proc.send_signal(signal.SIGTERM)
            messages, trailers, _ = raw_call_end(raw, sid, refused_ok=True)
        assert s.proc.wait(timeout=STOP_TIMEOUT) == 0
        assert s.stop(check=True) == 0
        responses = [pb.BatchAppendResponse.FromString(m) for m in messages]
        if trailers is None:
            pass  # refused by the GOAWAY, never read: nothing may be stored (checked below)
        elif len(responses) == len(plan.requests):
            complete += 1
            assert trailers.get("grpc-status") == "0", \
                f"round {round_}: every append answered after the half-close, yet {trailers}"
        else:
            assert trailers.get("grpc-status") == "14", \
                f"round {round_}: {len(responses)} of {len(plan.requests)} answered, then {trailers}"
        successes = {r.correlation_id: r for r in responses if r.WhichOneof("result") == "success"}
        stored_matches_successes(s, plan, successes, streams, f"round {round_}")
    print(f"rounds where every append was answered: {complete} of 6")
