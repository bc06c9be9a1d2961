"""
Prometheus metrics on PROM_PORT (GET /metrics): the text format 0.0.4 passes
`promtool check metrics`, the required names are there with their types and
labels, and the counters and gauges move with the traffic made over gRPC
and HTTP. The module's server runs with MAP_SIZE=256M and SHARDS=2.
"""

import os
import shutil
import subprocess
import time
import uuid

import grpc
import pytest

from conftest import (
    API, DEFAULT_MAX_MESSAGE, KeepAlive, ServerFactory, append, event_count, event_data,
    expect_code, expect_error, expect_ok, http_append, http_get, poll, read_stream, scrape,
    server_version, shard_of, stream_count, stream_path, unique, wait_http_ready, wait_prom_ready,
)

SHARDS = 2
MAP_BYTES = 256 * 1024 * 1024
HISTOGRAMS = ["eventflowdb_request_duration_seconds", "eventflowdb_commit_batch_events",
              "eventflowdb_commit_duration_seconds"]
COUNTERS = ["eventflowdb_requests_total", "eventflowdb_appends_total", "eventflowdb_events_appended_total",
            "eventflowdb_bytes_appended_total", "process_cpu_seconds_total"]
GAUGES = ["eventflowdb_build_info", "process_resident_memory_bytes", "process_open_fds",
          "process_start_time_seconds", "eventflowdb_shard_queue_depth", "eventflowdb_storage_used_bytes",
          "eventflowdb_storage_map_bytes", "eventflowdb_global_position", "eventflowdb_events",
          "eventflowdb_streams", "eventflowdb_connections"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, pb, pb_grpc, request):
    factory = ServerFactory(tmp_path_factory, "metrics", request.session)
    s = factory.new(env={"MAP_SIZE": "256M", "SHARDS": str(SHARDS)})
    wait_http_ready(s)
    wait_prom_ready(s)
    yield s
    factory.finish()


def some_traffic(server, stub):
    """A little of everything, so labelled series exist."""
    stream = unique("traffic")
    append(stub, stream, 2)
    expect_ok(http_append(server, stream, [{"type": "T"}], version=2))
    expect_ok(http_get(server, stream_path(stream)))
    expect_error(http_append(server, stream, [{"type": "T"}], version=0), 409, "ABORTED")
    expect_error(http_get(server, "/nope"), 404, "NOT_FOUND")
    read_stream(stub, stream)
    return stream


def moved(server, name, before, at_least=1, timeout=10.0, **labels):
    """Polls (bounded) until the summed samples of name{labels} reached before + at_least; returns the value."""
    def check():
        v = scrape(server)[1].value(name, **labels)
        return v if v >= before + at_least else None
    return poll(check, timeout=timeout, interval=0.05,
                what=f"{name}{labels} to reach {before} + {at_least}")


# ---- format ---------------------------------------------------------------------------------

def test_metrics_endpoint_and_content_type(server, stub):
    some_traffic(server, stub)
    r, m = scrape(server)
    ct = r.header("content-type") or ""
    assert ct.startswith("text/plain"), f"content-type {ct!r}"
    assert "version=0.0.4" in ct.replace(" ", ""), f"content-type {ct!r} should say version=0.0.4"
    assert m.samples, "no samples"
    # Keep-alive on the metrics port too.
    with KeepAlive(server.prom_port) as conn:
        for _ in range(5):
            assert conn.get("/metrics").status == 200


def test_promtool_check_metrics(server, stub):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not installed (Debian package prometheus)", pytrace=False)
    some_traffic(server, stub)
    r, _ = scrape(server)
    res = subprocess.run([promtool, "check", "metrics"], input=r.body, capture_output=True, timeout=60)
    assert res.returncode == 0, (f"promtool check metrics exited {res.returncode}:\n"
                                 f"{res.stdout.decode()}{res.stderr.decode()}")


def test_required_names_types_and_labels(server, stub):
    some_traffic(server, stub)
    _, m = scrape(server)
    missing = []
    for name in GAUGES:
        if m.types.get(name) != "gauge":
            missing.append(f"{name}: TYPE {m.types.get(name)!r}, want gauge")
        elif not m.has(name):
            missing.append(f"{name}: no sample")
    for name in COUNTERS:
        family = name[:-len("_total")]
        if m.types.get(family) != "counter" and m.types.get(name) != "counter":
            missing.append(f"{name}: TYPE {m.types.get(family) or m.types.get(name)!r}, want counter")
        elif not m.has(name):
            missing.append(f"{name}: no sample")
    for name in HISTOGRAMS:
        if m.types.get(name) != "histogram":
            missing.append(f"{name}: TYPE {m.types.get(name)!r}, want histogram")
        elif not (m.has(name + "_bucket", le="+Inf") and m.has(name + "_sum") and m.has(name + "_count")):
            missing.append(f"{name}: needs _bucket{{le=\"+Inf\"}}, _sum and _count")
    assert not missing, "\n".join(missing)

    for shard in map(str, range(SHARDS)):
        for name in ("eventflowdb_commit_batch_events_count", "eventflowdb_commit_duration_seconds_count",
                     "eventflowdb_shard_queue_depth", "eventflowdb_storage_used_bytes",
                     "eventflowdb_storage_map_bytes"):
            assert m.has(name, shard=shard), f"{name}{{shard=\"{shard}\"}} missing"
    for transport in ("grpc", "http"):
        assert m.has("eventflowdb_connections", transport=transport), \
            f'eventflowdb_connections{{transport="{transport}"}} missing'
        found = m.find("eventflowdb_requests_total", transport=transport)
        assert found, f'no eventflowdb_requests_total{{transport="{transport}"}}'
        for labels, _ in found:
            assert {"transport", "method", "code"} <= set(labels), labels
        assert m.find("eventflowdb_request_duration_seconds_count", transport=transport)
        for labels, _ in m.find("eventflowdb_request_duration_seconds_count", transport=transport):
            assert "method" in labels, labels
    results = {labels.get("result") for labels, _ in m.find("eventflowdb_appends_total")}
    allowed = {"ok", "wrong_version", "already_exists", "invalid", "too_large", "storage_full", "error"}
    assert results <= allowed, f"unknown result labels: {results - allowed}"
    assert {"ok", "wrong_version"} <= results, results
    # Histograms: cumulative buckets ending in +Inf == _count.
    for name in HISTOGRAMS:
        for labels, count in m.find(name + "_count"):
            buckets = [(lab["le"], v) for lab, v in m.find(name + "_bucket", **labels)]
            values = [v for _, v in buckets]
            assert values == sorted(values), f"{name}{labels} buckets not cumulative: {buckets}"
            assert buckets and buckets[-1][0] == "+Inf" and buckets[-1][1] == count, \
                f"{name}{labels}: +Inf bucket must equal _count {count}: {buckets}"


def test_build_info(server, stub):
    _, m = scrape(server)
    found = m.find("eventflowdb_build_info")
    assert len(found) == 1, found
    labels, value = found[0]
    assert value == 1
    assert labels.get("version") == server_version(stub), labels


def test_process_metrics_are_plausible(server):
    _, m = scrape(server)
    assert m.one("process_open_fds") >= 3
    assert m.one("process_resident_memory_bytes") > 1024 * 1024
    assert m.one("process_cpu_seconds_total") >= 0
    start = m.one("process_start_time_seconds")
    age = time.monotonic() - server.spawned_at
    assert time.time() - age - 60 <= start <= time.time() + 5, \
        f"process_start_time_seconds {start} vs now {time.time()} (started {age:.1f} s ago)"


def test_threads_are_named_by_shard(server):
    """top -H, perf and /proc show which shard's loop or committer a thread is."""
    tasks = f"/proc/{server.proc.pid}/task"
    names = []
    for task in os.listdir(tasks):
        with open(f"{tasks}/{task}/comm") as comm:
            names.append(comm.read().strip())
    for role in ("shard", "commit"):
        assert sorted(n for n in names if n.startswith(f"evf-{role}-")) == \
            [f"evf-{role}-{i}" for i in range(2)], names


# ---- counters move -----------------------------------------------------------------------------

def test_http_request_counters_move(server, stub):
    stream = unique("req")
    append(stub, stream, 1)
    _, m = scrape(server)
    ok = m.value("eventflowdb_requests_total", transport="http", method="read_stream", code="200")
    dur = m.value("eventflowdb_request_duration_seconds_count", transport="http", method="read_stream")
    conflicts = m.value("eventflowdb_requests_total", transport="http", code="409")
    for _ in range(3):
        expect_ok(http_get(server, stream_path(stream)))
    expect_error(http_append(server, stream, [{"type": "T"}], version=0), 409, "ABORTED")
    moved(server, "eventflowdb_requests_total", ok, 3, transport="http", method="read_stream", code="200")
    moved(server, "eventflowdb_request_duration_seconds_count", dur, 3, transport="http", method="read_stream")
    moved(server, "eventflowdb_requests_total", conflicts, 1, transport="http", code="409")


def test_grpc_request_counters_move(server, stub):
    _, m = scrape(server)
    before = m.value("eventflowdb_requests_total", transport="grpc")
    dur = m.value("eventflowdb_request_duration_seconds_count", transport="grpc")
    for _ in range(5):
        server_version(stub)
    moved(server, "eventflowdb_requests_total", before, 5, transport="grpc")
    moved(server, "eventflowdb_request_duration_seconds_count", dur, 5, transport="grpc")


def test_append_results_are_counted(server, stub, pb):
    name = "eventflowdb_appends_total"
    _, m = scrape(server)
    before = {r: m.value(name, result=r) for r in ("ok", "wrong_version", "already_exists", "invalid", "too_large")}
    events_before = m.value("eventflowdb_events_appended_total")
    bytes_before = m.value("eventflowdb_bytes_appended_total")

    stream = unique("res")
    eid = str(uuid.uuid4())
    data = b"d" * 1000
    expect_ok(http_append(server, stream, [{"type": "T", "data": data, "id": eid}, {"type": "T", "data": data}],
                          version=0))
    append(stub, stream, [event_data("G", data)], version=2)
    moved(server, name, before["ok"], 2, result="ok")
    moved(server, "eventflowdb_events_appended_total", events_before, 3)
    moved(server, "eventflowdb_bytes_appended_total", bytes_before, 3 * len(data))

    expect_error(http_append(server, stream, [{"type": "T"}], version=0), 409, "ABORTED")
    expect_code(grpc.StatusCode.ABORTED, append, stub, stream, 1, version=99)
    moved(server, name, before["wrong_version"], 2, result="wrong_version")

    expect_error(http_append(server, unique("res2"), [{"type": "T", "id": eid}]), 409, "ALREADY_EXISTS")
    moved(server, name, before["already_exists"], 1, result="already_exists")

    expect_error(http_append(server, stream, [{"type": ""}], version=-1), 400, "INVALID_ARGUMENT")
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, append, stub, stream, [event_data(type_="")])
    moved(server, name, before["invalid"], 2, result="invalid")

    # An event that could not fit alone in a read response.
    expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, append, stub, stream,
                [event_data("Big", b"f" * (DEFAULT_MAX_MESSAGE - 100))])
    moved(server, name, before["too_large"], 1, result="too_large")

    # Failures append nothing.
    _, m = scrape(server)
    assert m.value("eventflowdb_events_appended_total") == events_before + 3


def test_gauges_match_the_store(server, stub):
    stream = unique("gauge")
    r = append(stub, stream, 7)
    last = r.first_position + 6

    def settled():
        _, m = scrape(server)
        want = (event_count(stub), stream_count(stub))
        got = (m.one("eventflowdb_events"), m.one("eventflowdb_streams"))
        return (m, want) if got == want and m.one("eventflowdb_global_position") >= last else None
    m, (events, streams) = poll(lambda: settled(), timeout=10, interval=0.05,
                                what="eventflowdb_events/_streams/_global_position to match the store")
    assert m.one("eventflowdb_global_position") >= events
    # And over HTTP.
    assert expect_ok(http_get(server, f"{API}/event/count"))["count"] == m.one("eventflowdb_events")


def test_per_shard_metrics(server, stub):
    _, m = scrape(server)
    for shard in map(str, range(SHARDS)):
        for kind in ("storage", "index"):
            assert m.one(f"eventflowdb_{kind}_map_bytes", shard=shard) == MAP_BYTES
            used = m.one(f"eventflowdb_{kind}_used_bytes", shard=shard)
            assert 0 < used <= MAP_BYTES, f"shard {shard} {kind} used {used}"
        assert m.one("eventflowdb_shard_queue_depth", shard=shard) >= 0
    # Appends to a stream of shard k count a commit on shard k.
    for k in range(SHARDS):
        stream = next(s for s in (unique(f"shard{k}") for _ in range(1000)) if shard_of(s, SHARDS) == k)
        _, m = scrape(server)
        batches = m.value("eventflowdb_commit_batch_events_count", shard=str(k))
        commits = m.value("eventflowdb_commit_duration_seconds_count", shard=str(k))
        events_sum = m.value("eventflowdb_commit_batch_events_sum", shard=str(k))
        used = m.one("eventflowdb_storage_used_bytes", shard=str(k))
        append(stub, stream, [event_data("S", b"u" * 200000)])
        moved(server, "eventflowdb_commit_batch_events_count", batches, 1, shard=str(k))
        moved(server, "eventflowdb_commit_duration_seconds_count", commits, 1, shard=str(k))
        moved(server, "eventflowdb_commit_batch_events_sum", events_sum, 1, shard=str(k))
        moved(server, "eventflowdb_storage_used_bytes", used, 100000, shard=str(k))


def connections_counted(server, transport, n, open_them, close_them):
    """
    With n connections of ours open the gauge counts at least n; once they
    are closed it falls by at least n from what it showed. Connections that
    earlier tests left open may close meanwhile, so no fixed base is used.
    """
    conns = open_them(n)
    try:
        peak = moved(server, "eventflowdb_connections", 0, n, transport=transport)
    finally:
        close_them(conns)
    poll(lambda: scrape(server)[1].value("eventflowdb_connections", transport=transport) <= peak - n,
         timeout=10, interval=0.05, what=f"eventflowdb_connections{{transport={transport}}} to drop by {n}")


def test_connections_gauge(server):
    def open_them(n):
        conns = [KeepAlive(server.http_port) for _ in range(n)]
        for c in conns:
            expect_ok(c.get(f"{API}/version"))  # accepted and served
        return conns

    connections_counted(server, "http", 5, open_them, lambda conns: [c.close() for c in conns])


def test_grpc_connections_gauge(server):
    def open_them(n):
        chans = [server.channel(own_connection=True) for _ in range(n)]
        for ch in chans:
            server_version(server.stub(ch))
        return chans

    connections_counted(server, "grpc", 3, open_them, lambda chans: [ch.close() for ch in chans])


def test_storage_full_is_counted(server_factory):
    s = server_factory.new(env={"MAP_SIZE": "1M", "SHARDS": "1"})
    wait_prom_ready(s)
    st = s.stub()
    stream = unique("full")
    before = scrape(s)[1].value("eventflowdb_appends_total", result="storage_full")
    for _ in range(64):
        try:
            append(st, stream, [event_data("F", bytes(range(256)) * 512)])
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            break
    else:
        pytest.fail("a 1 MiB map never filled up")
    moved(s, "eventflowdb_appends_total", before, 1, result="storage_full")
    _, m = scrape(s)
    assert m.one("eventflowdb_storage_map_bytes", shard="0") == 1024 * 1024
    assert m.one("eventflowdb_events") == event_count(st)
