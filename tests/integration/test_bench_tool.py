"""
eventflowdb-bench (bench/loadgen) against the real server: what the tool
reports must be what the server stored or served, counted independently
with the gRPC API (EventCount, GetStream, GetGlobalStream); its JSON keys
must be there and agree with each other; bad usage exits 2; an unreachable
or silent server ends the run with exit 1 within a bounded time; Ctrl-C
ends a run early with results.

Environment (ctest sets both): EVENTFLOWDB_BIN (the server),
EVENTFLOWDB_BENCH_BIN (the tool).
"""

import json
import math
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from conftest import (
    HOST, SANITIZER_MARKERS, event_count, free_port, poll, read_global_all, read_stream_all,
    stream_count, wait_http_ready,
)

RUN_TIMEOUT = 120.0  # seconds any one tool run may take (ASan builds are slow)
FAIL_FAST = 15.0     # seconds within which a failing run must have ended

LATENCY_KEYS = ("p50", "p90", "p99", "p999", "max", "mean")
TOP_KEYS = ("scenario", "requests", "events", "requests_per_second", "events_per_second",
            "bytes_per_second", "errors", "errors_by_status", "conflicts", "duration_s",
            "latency_us")


def bench_binary():
    path = os.environ.get("EVENTFLOWDB_BENCH_BIN")
    if not path:
        pytest.fail("EVENTFLOWDB_BENCH_BIN is not set: give the path of eventflowdb-bench "
                    "(ctest sets it)", pytrace=False)
    assert os.path.isfile(path) and os.access(path, os.X_OK), f"{path} is not an executable file"
    return path


class BenchRun:
    def __init__(self, proc, elapsed, report):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.elapsed = elapsed
        self.report = report

    def __repr__(self):
        return (f"exit {self.rc} after {self.elapsed:.1f} s\n--- stdout\n{self.stdout}\n"
                f"--- stderr\n{self.stderr[-3000:]}")


def run_bench(args, tmp_path, timeout=RUN_TIMEOUT, want_json=True):
    """Runs the tool once (bounded); returns a BenchRun with the parsed --json report, if any."""
    path = tmp_path / f"bench-{uuid.uuid4().hex[:8]}.json"
    cmd = [bench_binary()] + [str(a) for a in args]
    if want_json:
        cmd += ["--json", str(path)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    report = json.loads(path.read_text()) if want_json and path.exists() else None
    run = BenchRun(proc, elapsed, report)
    for marker in SANITIZER_MARKERS:
        assert marker not in proc.stderr, f"sanitizer report from eventflowdb-bench:\n{run!r}"
    return run


def check_report(r, scenario):
    """The keys every report has, and how they must agree."""
    for key in TOP_KEYS:
        assert key in r, f"JSON report lacks {key!r}: {sorted(r)}"
    assert r["scenario"] == scenario
    lat = r["latency_us"]
    for key in LATENCY_KEYS:
        assert key in lat, f"latency_us lacks {key!r}: {lat}"
    assert r["requests"] > 0 and r["duration_s"] > 0
    assert r["requests_per_second"] > 0 and r["events_per_second"] > 0
    assert r["requests_per_second"] == pytest.approx(r["requests"] / r["duration_s"], rel=1e-3)
    assert r["events_per_second"] == pytest.approx(r["events"] / r["duration_s"], rel=1e-3)
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"], lat
    assert lat["p50"] <= lat["max"] and 0 < lat["mean"] <= lat["max"]
    assert lat["count"] == r["requests"] + r["conflicts"] + r["errors"]
    assert r["errors"] == sum(r["errors_by_status"].values())
    assert sum(op["requests"] for op in r["ops"].values()) == r["requests"]
    assert sum(op["events"] for op in r["ops"].values()) == r["events"]


def wait_count(stub, want, what):
    """EventCount reaches want (bounded), and stays there: it never passes it."""
    got = poll(lambda: event_count(stub) >= want, timeout=15.0, what=what) and event_count(stub)
    assert got == want, f"{what}: the server stored {got} events, want {want}"


@pytest.fixture(scope="module")
def target(server):
    return server.target


# --------------------------------------------------------------------------
# append, append-occ
# --------------------------------------------------------------------------

def test_append_counts_what_the_server_stored(server, stub, target, tmp_path):
    prefix = f"bt-{uuid.uuid4().hex[:8]}-"
    before, streams_before = event_count(stub), stream_count(stub)
    run = run_bench(["--target", target, "--scenario", "append", "--requests", 2000,
                     "--events-per-append", 3, "--warmup", 0, "--stream-prefix", prefix],
                    tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "append")
    assert r["requests"] == 2000 and r["events"] == 3 * r["requests"]
    assert r["errors"] == 0 and r["errors_by_status"] == {} and r["conflicts"] == 0
    assert r["bytes_per_second"] == 0  # appends read nothing
    assert r["appended_events_all_phases"] == r["events"]  # no warmup: every append measured
    wait_count(stub, before + 6000, "the appends' events")
    # Round robin over the default 1000 streams: 2 appends of 3 events each.
    assert stream_count(stub) == streams_before + 1000
    for i in (0, 1, 500, 999):
        assert len(read_stream_all(stub, f"{prefix}{i:03d}")) == 6
    assert "requests" in run.stdout and "latency" in run.stdout


def test_append_with_warmup_and_duration(server, stub, target, tmp_path):
    before = event_count(stub)
    run = run_bench(["--target", target, "--duration", 1, "--warmup", 0.3, "--streams", 50,
                     "--connections", 2, "--concurrency", 8, "--threads", 2], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "append")
    assert r["duration_s"] == pytest.approx(1.0, abs=0.05)
    # The warmup's and the drain's appends are stored too, but not counted as measured.
    assert r["appended_events_all_phases"] > r["events"] > 0
    wait_count(stub, before + r["appended_events_all_phases"], "every acknowledged append")


def test_batch_append_counts_what_the_server_stored(server, stub, target, tmp_path):
    before = event_count(stub)
    run = run_bench(["--target", target, "--scenario", "batch-append", "--requests", 2000,
                     "--warmup", 0, "--connections", 2, "--concurrency", 2,
                     "--batch-window", 64], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "batch-append")
    assert r["requests"] == 2000 and r["events"] == 2000 and r["errors"] == 0
    assert r["appended_events_all_phases"] == r["events"]  # no warmup: every append measured
    wait_count(stub, before + r["events"], "the BatchAppend calls' events")


def test_append_occ_no_conflicts_on_fresh_streams_then_resyncs(server, stub, target, tmp_path):
    prefix = f"occ-{uuid.uuid4().hex[:8]}-"
    args = ["--target", target, "--scenario", "append-occ", "--requests", 1000, "--warmup", 0,
            "--streams", 50, "--stream-prefix", prefix]
    before = event_count(stub)
    run = run_bench(args, tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "append-occ")
    assert r["conflicts"] == 0 and r["errors"] == 0 and r["requests"] == 1000
    assert r["events"] == 1000
    wait_count(stub, before + 1000, "the OCC appends")
    lengths = [len(read_stream_all(stub, f"{prefix}{i:02d}")) for i in range(50)]
    assert sum(lengths) == 1000 and min(lengths) > 0
    # Again on the same streams: each stream's writer starts at version 0, is refused once
    # (ABORTED names the actual version), resyncs and goes on without errors.
    run = run_bench(args, tmp_path)
    assert run.rc == 0, run
    r = run.report
    assert r["conflicts"] == 50, r
    assert r["errors"] == 0 and r["requests"] + r["conflicts"] == 1000
    wait_count(stub, before + 1000 + r["events"], "the second OCC run's appends")


def test_append_with_client_ids_stores_each_id_once(server, stub, target, tmp_path):
    prefix = f"ids-{uuid.uuid4().hex[:8]}-"
    args = ["--target", target, "--scenario", "append", "--requests", 500, "--warmup", 0,
            "--events-per-append", 4, "--streams", 20, "--stream-prefix", prefix,
            "--connections", 2, "--threads", 2, "--client-ids"]
    before = event_count(stub)
    for run_number in (1, 2):  # a second run's ids are new too: no reuse refused
        run = run_bench(args, tmp_path)
        assert run.rc == 0, run
        r = run.report
        assert r["requests"] == 500 and r["events"] == 2000 and r["errors"] == 0, r
        wait_count(stub, before + 2000 * run_number, f"run {run_number}'s appends")
    events = [e for i in range(20) for e in read_stream_all(stub, f"{prefix}{i:02d}")]
    ids = [e.id for e in events]
    assert len(events) == 4000 and len(set(ids)) == 4000
    assert len({i[:8] for i in ids}) == 2  # one prefix per run
    assert all(e.causation_id == e.id for e in events)


# --------------------------------------------------------------------------
# reads
# --------------------------------------------------------------------------

def test_read_stream_reads_prefilled_streams(server, stub, target, tmp_path):
    prefix = f"rs-{uuid.uuid4().hex[:8]}-"
    before = event_count(stub)
    run = run_bench(["--target", target, "--scenario", "read-stream", "--streams", 20,
                     "--prefill", 30, "--limit", 100, "--duration", 1, "--warmup", 0.2,
                     "--stream-prefix", prefix], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "read-stream")
    assert r["prefill_events"] == 600
    wait_count(stub, before + 600, "the prefill")
    assert all(len(read_stream_all(stub, f"{prefix}{i:02d}")) == 30 for i in range(20))
    # Every read returns a whole prefilled stream: 30 events, under the limit.
    assert r["events"] == 30 * r["requests"]
    assert r["bytes_per_second"] > 0 and r["bytes"] > r["events"] * 200


def test_read_global_one_reader_reads_everything_stored(server, stub, target, tmp_path):
    stored = event_count(stub)
    assert stored > 0
    read_global_all(stub, expect_at_least=stored)  # all of it visible to global reads
    limit = 1000
    pages = math.ceil(stored / limit)
    # One reader: its pages are the whole global stream, then one empty page.
    run = run_bench(["--target", target, "--scenario", "read-global", "--connections", 1,
                     "--concurrency", 1, "--limit", limit, "--requests", pages + 1,
                     "--warmup", 0], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "read-global")
    assert r["prefill_events"] == 0  # the store was not empty
    assert r["events"] == stored
    assert r["bytes"] > stored * 200 and r["bytes_per_second"] > 0


def test_read_global_many_readers(server, stub, target, tmp_path):
    stored = event_count(stub)
    run = run_bench(["--target", target, "--scenario", "read-global", "--duration", 1,
                     "--warmup", 0.2, "--threads", 2], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "read-global")
    assert r["events"] >= stored, f"read {r['events']} events, the store holds {stored}"


def test_read_global_prefills_an_empty_store(server_factory, tmp_path):
    s = server_factory.new()
    stub = s.stub()
    run = run_bench(["--target", s.target, "--scenario", "read-global", "--streams", 10,
                     "--prefill", 20, "--limit", 50, "--connections", 1, "--concurrency", 1,
                     "--requests", 5, "--warmup", 0], tmp_path)
    assert run.rc == 0, run
    r = run.report
    assert r["prefill_events"] == 200
    assert event_count(stub) == 200
    assert r["events"] == 200  # pages of 50, 50, 50, 50, then an empty one


def test_http_read_global_and_stream(server, stub, tmp_path):
    wait_http_ready(server)
    http_target = f"{HOST}:{server.http_port}"
    stored = event_count(stub)
    read_global_all(stub, expect_at_least=stored)
    pages = math.ceil(stored / 500)
    run = run_bench(["--target", http_target, "--scenario", "http-read", "--connections", 1,
                     "--limit", 500, "--requests", pages + 1, "--warmup", 0], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "http-read")
    assert r["events"] == stored
    assert r["config"]["http_mode"] == "global"

    prefix = f"hs-{uuid.uuid4().hex[:8]}-"
    run = run_bench(["--target", http_target, "--scenario", "http-read", "--http-mode", "stream",
                     "--streams", 10, "--prefill", 25, "--requests", 200, "--warmup", 0,
                     "--stream-prefix", prefix], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "http-read")
    assert r["prefill_events"] == 250  # written over HTTP POST
    assert all(len(read_stream_all(stub, f"{prefix}{i}")) == 25 for i in range(10))
    assert r["requests"] == 200 and r["events"] == 25 * 200


def test_mixed(server, stub, target, tmp_path):
    before = event_count(stub)
    run = run_bench(["--target", target, "--scenario", "mixed", "--duration", 1, "--warmup", 0.2,
                     "--streams", 20, "--prefill", 10,
                     "--mix", "append=60,read-stream=30,read-global=10"], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "mixed")
    ops = r["ops"]
    assert set(ops) == {"append", "read-stream", "read-global"}
    assert all(op["requests"] > 0 for op in ops.values()), ops
    assert r["config"]["mix"] == {"append": 60, "read-stream": 30, "read-global": 10}
    # Appends write the stream-read streams: those reads return at least the prefill.
    assert ops["read-stream"]["events"] >= 10 * ops["read-stream"]["requests"]
    assert ops["append"]["events"] == ops["append"]["requests"]
    wait_count(stub, before + r["prefill_events"] + r["appended_events_all_phases"],
               "the prefill and every acknowledged append")


# --------------------------------------------------------------------------
# subscriptions
# --------------------------------------------------------------------------

def stamped_in_window(stub, prefix, window):
    """Stored events of the run's streams whose data starts with a time (little-endian ns) in window."""
    lo, hi = window
    return sum(1 for e in read_global_all(stub)
               if e.stream.startswith(prefix) and lo <= int.from_bytes(e.data[:8], "little") < hi)


def check_delivery_latency(r):
    lat = r["delivery_latency_us"]
    assert lat["count"] == r["delivered"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"], lat


@pytest.mark.parametrize("subscribers,threads", [(1, 1), (7, 2)])
def test_subscribe_delivers_every_acknowledged_append(server, stub, target, tmp_path,
                                                      subscribers, threads):
    prefix = f"sub-{uuid.uuid4().hex[:8]}-"
    before = event_count(stub)
    run = run_bench(["--target", target, "--scenario", "subscribe", "--subscribers", subscribers,
                     "--rate", 400, "--duration", 1, "--warmup", 0.3, "--connections", 3,
                     "--concurrency", 4, "--threads", threads, "--stream-prefix", prefix], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "subscribe")
    assert r["errors"] == 0 and r["subscribers"] == subscribers
    assert r["config"]["subscribers"] == subscribers
    wait_count(stub, before + r["appended_events_all_phases"], "every acknowledged append")
    # Counted apart from the tool: the stored events whose time falls in its measured window.
    owed = stamped_in_window(stub, prefix, r["measured_window_ns"])
    assert 300 <= owed <= 500, owed  # 400/s for 1 s
    assert owed < r["appended_events_all_phases"]  # the warmup's are not owed
    assert r["delivery_expected"] == subscribers * owed
    assert r["delivered"] == subscribers * owed
    assert r["delivered_per_second"] == pytest.approx(r["delivered"] / r["duration_s"], rel=1e-3)
    assert r["delivered_bytes"] > r["delivered"] * 200
    check_delivery_latency(r)
    assert list(r["ops"]) == ["append"]
    assert "delivered" in run.stdout and "delivery" in run.stdout


def test_subscribe_catch_up_delivers_every_stored_event(server, stub, target, tmp_path):
    stored = event_count(stub)
    assert stored > 0
    read_global_all(stub, expect_at_least=stored)  # all of it visible to subscriptions
    run = run_bench(["--target", target, "--scenario", "subscribe-catch-up", "--subscribers", 3,
                     "--connections", 2], tmp_path)
    assert run.rc == 0, run
    r = run.report
    check_report(r, "subscribe-catch-up")
    assert r["prefill_events"] == 0  # the store was not empty
    assert r["requests"] == 3  # each subscriber caught up once
    assert r["delivered"] == r["events"] == r["delivery_expected"] == 3 * stored
    assert r["delivered_bytes"] > 3 * stored * 200 and r["delivered_bytes_per_second"] > 0
    assert r["delivery_latency_us"]["count"] == 0  # no send times in a catch-up


def test_subscribe_catch_up_prefills_an_empty_store(server_factory, tmp_path):
    s = server_factory.new()
    stub = s.stub()
    run = run_bench(["--target", s.target, "--scenario", "subscribe-catch-up", "--subscribers", 2,
                     "--streams", 10, "--prefill", 30], tmp_path)
    assert run.rc == 0, run
    r = run.report
    assert r["prefill_events"] == 300 and event_count(stub) == 300
    assert r["delivered"] == 600 and r["requests"] == 2


def test_subscribers_beyond_the_servers_streams_fail_the_run(target, tmp_path):
    """300 subscribers and 16 writers per connection: the server allows 256 streams; no hang."""
    run = run_bench(["--target", target, "--scenario", "subscribe", "--subscribers", 600,
                     "--connections", 2, "--duration", 1, "--timeout", 2], tmp_path,
                    timeout=FAIL_FAST)
    assert run.rc == 1, run
    assert "not caught up within the timeout" in run.report["failure"]
    assert run.elapsed < FAIL_FAST


class FaultyStore:
    """
    EventCount, AppendToStream and SubscribeToAll in memory, over grpcio; its
    subscriptions lose (or repeat) one event in 40, so the tool must see it.
    """

    def __init__(self, pb, fault):
        self.pb, self.fault = pb, fault
        self.events = []
        self.cond = threading.Condition()

    def EventCount(self, request, context):
        with self.cond:
            return self.pb.EventCountResponse(count=len(self.events))

    def AppendToStream(self, request, context):
        ids = [str(uuid.uuid4()) for _ in request.events]
        with self.cond:
            first = len(self.events) + 1
            for id_, e in zip(ids, request.events):
                self.events.append(self.pb.Event(id=id_, stream=request.stream, type=e.type,
                                                 data=e.data, position=len(self.events) + 1))
            self.cond.notify_all()
        return self.pb.AppendToStreamResponse(events=ids, first_position=first)

    def SubscribeToAll(self, request, context):
        sent = request.offset
        caught_up = False
        while context.is_active():
            with self.cond:
                self.cond.wait_for(lambda: len(self.events) > sent or not caught_up, timeout=0.1)
                new = self.events[sent:]
            for e in new:
                sent = e.position
                if e.position % 40 == 0 and self.fault == "lose":
                    continue
                yield self.pb.SubscriptionResponse(event=e)
                if e.position % 40 == 0 and self.fault == "repeat":
                    yield self.pb.SubscriptionResponse(event=e)
            if not caught_up:
                caught_up = True
                yield self.pb.SubscriptionResponse(
                    caught_up=self.pb.SubscriptionCaughtUp(position=sent))


@pytest.mark.parametrize("fault", ["lose", "repeat"])
def test_subscribe_fails_on_lost_or_repeated_events(pb, pb_grpc, fault, tmp_path):
    from concurrent import futures
    import grpc
    store = FaultyStore(pb, fault)
    servicer = type("Servicer", (pb_grpc.EventStoreServicer,),
                    {name: getattr(store, name)
                     for name in ("EventCount", "AppendToStream", "SubscribeToAll")})()
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_EventStoreServicer_to_server(servicer, srv)
    port = srv.add_insecure_port(f"{HOST}:0")
    srv.start()
    try:
        run = run_bench(["--target", f"{HOST}:{port}", "--scenario", "subscribe", "--rate", 200,
                         "--duration", 1, "--warmup", 0, "--connections", 1, "--concurrency", 4,
                         "--timeout", 2, "--max-error-rate", 0], tmp_path, timeout=FAIL_FAST)
    finally:
        srv.stop(0)
    assert run.rc == 1, run
    r = run.report
    assert r["delivery_expected"] >= 150, run
    if fault == "lose":
        assert "short of" in r["failure"]
        assert r["delivered"] == r["delivery_expected"] - r["delivery_expected"] // 40
    else:
        assert r["errors_by_status"] == {"BAD_RESPONSE": r["delivery_expected"] // 40}
        assert "position order" in r["first_error"]
        assert r["delivered"] == r["delivery_expected"]  # the repeats are not counted


# --------------------------------------------------------------------------
# errors, failures, usage
# --------------------------------------------------------------------------

def test_errors_are_counted_by_status_and_fail_the_run(server_factory, tmp_path):
    s = server_factory.new(env={"MAX_MESSAGE_SIZE": "4K"})
    args = ["--target", s.target, "--event-size", 8000, "--requests", 50, "--warmup", 0]
    run = run_bench(args, tmp_path)
    assert run.rc == 1, run
    r = run.report
    assert r["requests"] == 0 and r["errors"] == 50
    assert r["errors_by_status"] == {"RESOURCE_EXHAUSTED": 50}
    assert r["failure"] and "error rate" in r["failure"]
    # The same errors under a tolerant --max-error-rate are not a failure of the run.
    run = run_bench(args + ["--max-error-rate", 1], tmp_path)
    assert run.rc == 0, run
    assert run.report["errors"] == 50 and run.report["exit_code"] == 0


@pytest.mark.parametrize("args", [
    ["--bogus"],
    ["--duration", 1, "--requests", 5],
    ["--threads", 3, "--connections", 2],
    ["--scenario", "no-such-scenario"],
    ["--mix", "append=1"],
    ["--scenario", "mixed", "--mix", "append=0"],
    ["--scenario", "mixed", "--mix", "delete=5"],
    ["--target", "no-port"],
    ["--connections", 0],
    ["--concurrency", "x"],
    ["--max-error-rate", 2],
    ["--http-mode", "stream"],
    ["--stream-prefix", "$system-"],
    ["--duration", 5, "--max-time", 2],
    ["--subscribers", 2],
    ["--scenario", "subscribe", "--subscribers", 0],
    ["--scenario", "subscribe", "--requests", 100],
    ["--scenario", "subscribe", "--event-size", 4],
    ["--scenario", "subscribe-catch-up", "--duration", 5],
    ["--scenario", "subscribe-catch-up", "--rate", 100],
    ["--scenario", "read-global", "--client-ids"],
    ["unexpected"],
])
def test_bad_usage_exits_2(args, tmp_path):
    run = run_bench(args, tmp_path, timeout=FAIL_FAST, want_json=False)
    assert run.rc == 2, run
    assert "eventflowdb-bench:" in run.stderr and run.stdout == ""


def test_help(tmp_path):
    run = run_bench(["--help"], tmp_path, timeout=FAIL_FAST, want_json=False)
    assert run.rc == 0, run
    for word in ("--scenario", "--rate", "--json", "append-occ", "read-global", "http-read", "mixed",
                 "subscribe", "subscribe-catch-up", "--subscribers", "--client-ids"):
        assert word in run.stdout


@pytest.mark.parametrize("scenario", ["append", "read-global", "http-read"])
def test_unreachable_target_fails_fast(scenario, tmp_path):
    """Whether the measured run or a setup phase (probe, prefill) meets it: exit 1, a report."""
    port = free_port()
    run = run_bench(["--target", f"{HOST}:{port}", "--scenario", scenario, "--duration", 30],
                    tmp_path, timeout=FAIL_FAST)
    assert run.rc == 1, run
    assert run.elapsed < FAIL_FAST
    r = run.report
    assert "connection refused" in r["failure"] and r["exit_code"] == 1
    assert r["requests"] == 0 and r["scenario"] == scenario


def test_silent_server_ends_the_run(tmp_path):
    """A peer that accepts TCP but never speaks: the run ends after --timeout, with exit 1."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(64)  # connections complete in the backlog; nothing ever answers
        port = listener.getsockname()[1]
        run = run_bench(["--target", f"{HOST}:{port}", "--duration", 30, "--timeout", 1],
                        tmp_path, timeout=FAIL_FAST)
    assert run.rc == 1, run
    assert run.elapsed < 10
    assert "sent nothing" in run.report["failure"]


def test_max_time_ends_a_run_that_goes_on(target, tmp_path):
    run = run_bench(["--target", target, "--requests", 10**9, "--warmup", 0, "--max-time", 1],
                    tmp_path, timeout=FAIL_FAST)
    assert run.rc == 1, run
    assert run.elapsed < FAIL_FAST
    r = run.report
    assert "--max-time" in r["failure"] and r["requests"] > 0 and r["exit_code"] == 1


def test_sigint_ends_the_run_with_results(server, stub, target, tmp_path):
    path = tmp_path / "interrupted.json"
    before = event_count(stub)
    proc = subprocess.Popen([bench_binary(), "--target", target, "--duration", "120", "--warmup", "0",
                             "--json", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        poll(lambda: event_count(stub) > before + 100, timeout=30.0, what="the tool's appends")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=FAIL_FAST)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert "interrupted" in out
    r = json.loads(path.read_text())
    assert r["interrupted"] is True
    assert r["requests"] > 0 and 0 < r["duration_s"] < 120
    wait_count(stub, before + r["appended_events_all_phases"], "every acknowledged append")


def test_server_killed_mid_run(server_factory, tmp_path):
    """The server dies under load (two worker threads): exit 1 soon after, with the figures so far."""
    s = server_factory.new()
    stub = s.stub()
    path = tmp_path / "killed.json"
    proc = subprocess.Popen([bench_binary(), "--target", s.target, "--duration", "120",
                             "--warmup", "0", "--threads", "2", "--json", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        poll(lambda: event_count(stub) > 100, timeout=30.0, what="the tool's appends")
        s.kill()
        killed = time.monotonic()
        out, err = proc.communicate(timeout=FAIL_FAST)
        elapsed = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 1, f"exit {proc.returncode}\n{out}\n{err}"
    assert elapsed < 10
    r = json.loads(path.read_text())
    assert r["requests"] > 0 and r["failure"] and r["exit_code"] == 1
