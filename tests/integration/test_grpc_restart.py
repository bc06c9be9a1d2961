"""
Server lifecycle over gRPC: SIGTERM exits 0 within 10 s, a restart on the
same data folder serves everything back byte for byte and positions go on
above; acknowledged appends survive a SIGTERM under load (SYNC=full); the
shard count of a data folder is fixed; ports can be given as flags.
"""

import threading
import time
import uuid

import grpc

from conftest import (
    CHANNEL_OPTIONS, STOP_TIMEOUT, append, event_count, event_data, list_streams_all, poll, read_global,
    read_global_all, read_stream_all, server_version, stream_count, unique, wait_global,
)


def snapshot(stub, streams, total):
    """Everything readable, as bytes: per stream, the global stream, counts and names."""
    return {
        "streams": {s: [e.SerializeToString() for e in read_stream_all(stub, s)] for s in streams},
        "global": [e.SerializeToString() for e in read_global_all(stub, 0, expect_at_least=total)],
        "events": event_count(stub),
        "stream_count": stream_count(stub),
        "names": list_streams_all(stub),
    }


def test_restart_serves_everything_back(server_factory, pb):
    s = server_factory.new(env={"SYNC": "full", "SHARDS": "2"})
    stub = s.stub()
    streams = [unique("r") for _ in range(8)] + ["compte-été-🚀-" + uuid.uuid4().hex[:6]]
    retry_events = [event_data("Retried", b"r%d" % i, id=str(uuid.uuid4())) for i in range(3)]
    acks = []
    for round_ in range(3):
        for n, name in enumerate(streams):
            events = [event_data(f"E{round_}", b'{"r":%d,"n":%d}' % (round_, n), b"meta-%d" % n)
                      for _ in range(1 + n % 3)]
            if n == 0:
                events.append(event_data("WithIds", b"x", id=str(uuid.uuid4()).upper(),
                                         causation_id=str(uuid.uuid4()), correlation_id=str(uuid.uuid4())))
            acks.append(append(stub, name, events, version=-1))
    retried = append(stub, streams[1], retry_events, version=-1)
    total = event_count(stub)
    assert total == sum(len(a.events) for a in acks) + 3
    last = max(a.first_position + len(a.events) - 1 for a in acks + [retried])
    wait_global(stub, last)
    before = snapshot(stub, streams, total)
    assert len(before["global"]) == total

    s.stop()  # asserts exit 0 within 10 s and a clean sanitizer report
    s.start()
    stub = s.stub()
    after = snapshot(stub, streams, total)
    assert after["streams"] == before["streams"]
    assert after["global"] == before["global"]
    assert (after["events"], after["stream_count"], after["names"]) == \
        (before["events"], before["stream_count"], before["names"])

    # Ids survived: the retry is still recognised, nothing written.
    again = append(stub, streams[1], retry_events, version=-1)
    assert (again.first_version, again.first_position) == (retried.first_version, retried.first_position)
    assert list(again.events) == list(retried.events)
    assert event_count(stub) == total
    # New appends continue the versions and the positions.
    length = len(before["streams"][streams[0]])
    r = append(stub, streams[0], 2, version=length)
    assert r.first_version == length
    assert r.first_position > last
    fresh = append(stub, unique("after"), 1, version=0)
    assert fresh.first_position > r.first_position
    wait_global(stub, fresh.first_position)
    tail = read_global(stub, last, 0).events
    assert [e.position for e in tail] == sorted(e.position for e in tail)
    assert {e.id for e in tail} == set(r.events) | set(fresh.events)


def test_sigterm_under_load_keeps_acknowledged_appends(server_factory):
    s = server_factory.new(env={"SYNC": "full", "SHARDS": "2"})
    writers = 4
    streams = [unique("load") for _ in range(writers)]
    acked = [[] for _ in range(writers)]
    errors = [None] * writers

    def writer(k):
        # A channel of its own, closed here (not by s.stop()), on its own connection.
        ch = grpc.insecure_channel(s.target, options=CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)])
        st = s.stub(ch)
        try:
            while True:  # until the server goes away
                try:
                    r = append(st, streams[k], [event_data("Tick", b"%d" % len(acked[k]))],
                               version=len(acked[k]), timeout=20)
                except grpc.RpcError as e:
                    errors[k] = e.code()
                    return
                if r.first_version != len(acked[k]):
                    errors[k] = f"acknowledged at version {r.first_version}, expected {len(acked[k])}"
                    return
                acked[k].append(r.events[0])
        except Exception as e:  # noqa: BLE001
            errors[k] = repr(e)
        finally:
            ch.close()

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(writers)]
    for t in threads:
        t.start()
    poll(lambda: sum(map(len, acked)) >= 100, timeout=60, what="100 acknowledged appends")
    t0 = time.monotonic()
    s.stop()  # SIGTERM while the writers are busy: exit 0 within 10 s
    assert time.monotonic() - t0 <= STOP_TIMEOUT
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert all(isinstance(e, grpc.StatusCode) for e in errors), f"writers should have seen the server go: {errors}"

    s.start()
    stub = s.stub()
    for k, name in enumerate(streams):
        got = read_stream_all(stub, name)
        # Every acknowledged append is there, in order; at most the one in flight besides.
        assert [e.id for e in got[:len(acked[k])]] == acked[k], f"stream {name} lost acknowledged events"
        assert len(got) in (len(acked[k]), len(acked[k]) + 1)
        assert [e.version for e in got] == list(range(len(got)))


def test_shard_count_is_fixed_by_the_data_folder(server_factory):
    s = server_factory.new(env={"SHARDS": "2"})
    stub = s.stub()
    stream = unique("fixed")
    r = append(stub, stream, 3, version=0)
    s.stop()

    s.env_overrides["SHARDS"] = "3"
    proc = s.spawn()
    try:
        rc = proc.wait(timeout=20)
    except Exception:
        s.kill()
        raise AssertionError("a server with another shard count did not refuse to start")
    assert rc != 0, "a different SHARDS on an existing data folder must be refused"
    assert s.stderr_text().strip(), "the refusal should be explained on stderr"

    s.env_overrides["SHARDS"] = "2"
    s.start()
    stub = s.stub()
    assert [e.id for e in read_stream_all(stub, stream)] == list(r.events)


def test_ports_from_command_line_flags(server_factory):
    s = server_factory.new(ports_as_flags=True)
    stub = s.stub()
    assert server_version(stub)
    stream = unique("flags")
    append(stub, stream, 2, version=0)
    assert len(read_stream_all(stub, stream)) == 2
