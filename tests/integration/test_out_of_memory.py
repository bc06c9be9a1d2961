"""
Allocation failures inside the real server binary (fail_alloc.c preloaded:
one allocation in N fails, on every thread, while a flag file exists).

Under gRPC appends and reads (one allocation in EVF_OOM_EVERY failing) the
server must stay up; answer RESOURCE_EXHAUSTED only for appends it did not
store; otherwise answer, or lose the connection (UNAVAILABLE), or reset the
stream, but never leave a call unanswered; never store an append twice.
Once allocations succeed again it serves as before, and every acknowledged
append is stored exactly once, in the global order, before and after a
restart. It exits cleanly, with nothing leaked.

A connection the server has no memory for is closed at once, and the
server goes on taking connections once allocations succeed again.

Sizes (environment knobs):
    EVF_OOM_ROUNDS  rounds of requests while allocations fail (default 60)
    EVF_OOM_EVERY   one allocation in this many fails (default 50)
"""

import os
import socket
import uuid

import grpc

from conftest import (
    HOST, event_count, event_data, failing_alloc_env, http_request, load_stubs, poll,
    read_global_all, read_stream_all, read_until_closed, unique,
)

ROUNDS = int(os.environ.get("EVF_OOM_ROUNDS") or 60)
EVERY = int(os.environ.get("EVF_OOM_EVERY") or 50)
STREAMS = 12
CALL_TIMEOUT = 20.0  # seconds; a call still unanswered then was lost by the server
# What a request may meet while allocations fail: an out-of-memory answer, a lost connection,
# or its stream reset (INTERNAL_ERROR: a response's trailers nghttp2 had no memory to take).
TOLERATED = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}
RESET = (grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2")


class Ledger:
    """What the client sent: appends acknowledged, and those whose outcome it never learnt."""

    def __init__(self, prefix):
        self.streams = [f"{prefix}-{i}" for i in range(STREAMS)]
        self.acked = {}    # event id -> (stream, data)
        self.refused = {}  # event id -> (stream, data): RESOURCE_EXHAUSTED, so not stored
        self.unknown = {}  # event id -> (stream, data)
        self.errors = []   # what went wrong, as text, for the report

    def new_event(self, n):
        stream = self.streams[n % STREAMS]
        return stream, str(uuid.uuid4()), b"oom-%d-" % n + os.urandom(8).hex().encode()


def grpc_round(stub, pb, ledger, first):
    """Eight appends and four reads in flight at once; sorts out every outcome."""
    def call(method, request):  # waits for a connection, as the one in use may have failed
        return method.future(request, timeout=CALL_TIMEOUT, wait_for_ready=True)
    appends = []
    for n in range(first, first + 8):
        stream, event_id, data = ledger.new_event(n)
        request = pb.AppendToStreamRequest(stream=stream, version=-1,
                                           events=[event_data(data=data, id=event_id)])
        appends.append((stream, event_id, data, call(stub.AppendToStream, request)))
    reads = [call(stub.GetStream, pb.GetStreamRequest(stream=ledger.streams[first % STREAMS])),
             call(stub.GetGlobalStream, pb.GetGlobalStreamRequest(offset=0, limit=50)),
             call(stub.EventCount, pb.EventCountRequest()),
             call(stub.GetEvent, pb.GetEventRequest(id=appends[0][1]))]
    for stream, event_id, data, future in appends:
        code = future.code()
        if code == grpc.StatusCode.OK:
            assert list(future.result().events) == [event_id], future.result()
            ledger.acked[event_id] = (stream, data)
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            ledger.refused[event_id] = (stream, data)
        else:
            ledger.unknown[event_id] = (stream, data)
            check_tolerated(ledger, "AppendToStream", code, future.details())
    for future in reads:
        if future.code() != grpc.StatusCode.OK:
            check_tolerated(ledger, "read", future.code(), future.details())


def check_tolerated(ledger, what, code, details):
    if code == grpc.StatusCode.NOT_FOUND and what == "read":
        return  # GetEvent of an append that was not stored
    if code not in TOLERATED and (code, details) != RESET:
        ledger.errors.append(f"{what}: {code.name} {details!r}")


def check_store(stub, ledger):
    """Every acknowledged append exactly once, the unknown ones at most once, the refused not."""
    stored = {}
    for stream in ledger.streams:
        events = read_stream_all(stub, stream)
        assert [e.version for e in events] == list(range(len(events))), f"{stream}: versions not contiguous"
        for e in events:
            assert e.id not in stored, f"event {e.id} stored twice"
            stored[e.id] = (e.stream, e.data)
    for event_id, sent in ledger.acked.items():
        assert stored.get(event_id) == sent, \
            f"acknowledged append {event_id} {sent} is stored as {stored.get(event_id)}"
    for event_id in stored:
        assert event_id not in ledger.refused, \
            f"{event_id} is stored, though its append was answered RESOURCE_EXHAUSTED"
        assert event_id in ledger.acked or event_id in ledger.unknown, f"{event_id} stored, never sent"
    # Ascending positions (read_global_all checks them); a failed commit leaves a hole.
    everything = read_global_all(stub, expect_at_least=len(stored))
    assert event_count(stub) == len(everything)
    assert {e.id for e in everything} >= set(stored), "events of the streams missing from the global order"
    return len(stored)


def wait_allocations_succeed(stub, pb):
    """The shim sees its flag gone within 32 allocations: then calls succeed, 20 in a row."""
    in_a_row = 0

    def succeeding():
        nonlocal in_a_row
        try:
            stub.Version(pb.VersionRequest(), timeout=CALL_TIMEOUT, wait_for_ready=True)
            in_a_row += 1
        except grpc.RpcError:
            in_a_row = 0
        return in_a_row >= 20
    poll(succeeding, timeout=60.0, what="20 Version calls in a row to succeed")


def test_allocation_failures_lose_nothing_acknowledged(server_factory, tmp_path):
    pb = load_stubs()[0]
    flag = tmp_path / "fail-allocations"
    s = server_factory.new(env={"SHARDS": "2", "SYNC": "full", **failing_alloc_env(flag, EVERY)})
    ledger = Ledger(unique("oom"))
    stub = s.stub()
    grpc_round(stub, pb, ledger, 0)
    assert len(ledger.acked) == 8 and not ledger.errors, ledger.errors

    flag.touch()
    for r in range(1, ROUNDS + 1):
        grpc_round(stub, pb, ledger, r * 10)
        assert s.alive(), f"the server died under allocation failures:\n{s.stderr_tail()}"
    flag.unlink()
    assert not ledger.errors, "\n".join(ledger.errors[:20])
    assert ledger.refused or ledger.unknown, "no append met a failed allocation: is the shim working?"
    print(f"acknowledged {len(ledger.acked)}, refused {len(ledger.refused)}, "
          f"unknown {len(ledger.unknown)}")

    wait_allocations_succeed(stub, pb)
    acked = len(ledger.acked)
    grpc_round(stub, pb, ledger, (ROUNDS + 1) * 10)
    assert len(ledger.acked) - acked == 8, ledger.errors
    stored = check_store(stub, ledger)
    assert stored >= len(ledger.acked)

    s.stop()  # exit code 0, no sanitizer report: nothing leaked
    s.start()
    assert check_store(s.stub(), ledger) == stored


def test_a_connection_without_memory_is_closed_and_the_next_served(server_factory, tmp_path):
    """
    While every allocation fails, a new connection is closed at once (not left
    waiting, which also stopped its shard taking connections for good); once
    allocations succeed, new connections are served, on every port.
    """
    pb = load_stubs()[0]
    flag = tmp_path / "fail-allocations"
    s = server_factory.new(env={"SHARDS": "1", **failing_alloc_env(flag, every=1)})
    ports = {"gRPC": s.grpc_port, "HTTP": s.http_port, "metrics": s.prom_port}
    flag.touch()
    for name, port in ports.items():
        with socket.create_connection((HOST, port), timeout=10) as sock:
            closed, _ = read_until_closed(sock, timeout=10)
            assert closed, f"{name}: a connection the server had no memory for was left open"
    flag.unlink()
    assert s.stub().Version(pb.VersionRequest(), timeout=CALL_TIMEOUT).version
    assert http_request(s.http_port, "GET", "/readyz").status == 200
    assert http_request(s.prom_port, "GET", "/metrics").status == 200
