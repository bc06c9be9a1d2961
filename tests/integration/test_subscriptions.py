"""
Live subscriptions over gRPC (SubscribeToAll, SubscribeToStream) against the
real server binary: exactly once and in order across the catch-up/live
switch while writers append on every shard, one stream's events by version,
filters (types, prefixes, both) and their checkpoints, a consumer that stops
reading (bounded server memory, writers not slowed, nothing lost), every way
a subscription ends (cancel, deadline, channel closed, TCP reset) down to 0
in the gauge, SIGTERM (UNAVAILABLE after GOAWAY, exit 0), bad input.

One server for the module (SHARDS=3, SYNC=none, SUBSCRIPTION_CHECKPOINT_MS=50)
unless a test needs its own; every test uses its own stream names and types.

Sizes (environment knobs, defaults keep the file well under a minute under
AddressSanitizer on 2 cores):
    EVF_SUB_APPENDS   unary appends of the exactly-once test (default 2000, 1..4 events each)
    EVF_SLOW_EVENTS   events written past the stalled consumer (default 200000; 1000000 for the long run)
    EVF_SEED          seed of the random choices (default: random, printed on failure)
"""

import os
import random
import signal
import threading
import time

import grpc
import pytest

from conftest import (
    MIB, RPC_TIMEOUT, STOP_TIMEOUT, RawH2, ServerFactory, append, event_data, expect_ok,
    failing_sends_env, grpc_frame, header_block, http_append, move_first_stream_run, poll,
    raw_frames_until_closed, raw_messages,
    read_global_all, read_stream_all, rpc_code, scrape, shard_of, unique, wait_global,
    wait_http_ready, wait_prom_ready,
)

SHARDS = 3
CHECKPOINT_MS = 50
SUB_DEADLINE = 240.0  # no subscription of this file outlives its test, whatever happens
WAIT = 30.0  # bound of one wait for a subscription to see something (ASan, 2 cores)
SEED = int(os.environ.get("EVF_SEED") or random.randrange(1 << 30))
SUB_APPENDS = int(os.environ.get("EVF_SUB_APPENDS") or 2000)
SLOW_EVENTS = int(os.environ.get("EVF_SLOW_EVENTS") or 200_000)
GAUGE = "eventflowdb_subscriptions"


@pytest.fixture(autouse=True)
def _seed():
    """Shown with a failure's captured output: EVF_SEED=<this> replays the same random choices."""
    print(f"EVF_SEED={SEED}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, pb, pb_grpc, request):
    factory = ServerFactory(tmp_path_factory, "subscriptions", request.session)
    s = factory.new(env={"SHARDS": str(SHARDS), "SUBSCRIPTION_CHECKPOINT_MS": str(CHECKPOINT_MS)})
    wait_prom_ready(s)
    yield s
    factory.finish()


# --------------------------------------------------------------------------
# A subscription read by a background thread
# --------------------------------------------------------------------------

class Sub:
    """
    One subscription call, read by its own thread into `items`, in arrival order:
    ("event", Event) (or ("event", position) when compact), ("caught_up", position,
    version), ("checkpoint", position), ("empty",) for a response with no content set.
    `code`/`details` are set when the call ends. Waits are bounded (Condition.wait_for).
    pause_after_caught_up: the thread stops calling next() right after caught_up,
    until resume(): a consumer that stops reading.
    """

    def __init__(self, call, label, compact=False, pause_after_caught_up=False):
        self.call = call
        self.label = label
        self.compact = compact
        self.items = []
        self.n_events = 0
        self.last_position = 0
        self.last_version = -1
        self.caught_up = None
        self.checkpoints = 0
        self.last_checkpoint = None
        self.code = None
        self.details = None
        self.cond = threading.Condition()
        self.gate = threading.Event()
        self.gate.set()
        self.paused = False
        self._pause = pause_after_caught_up
        self.thread = threading.Thread(target=self._run, name=f"sub-{label}", daemon=True)
        self.thread.start()

    def _run(self):
        code, details = grpc.StatusCode.OK, None
        try:
            while True:
                self.gate.wait()
                r = next(self.call)
                which = r.WhichOneof("content")
                with self.cond:
                    if which == "event":
                        e = r.event
                        self.items.append(("event", e.position if self.compact else e))
                        self.n_events += 1
                        self.last_position = e.position
                        self.last_version = e.version
                    elif which == "caught_up":
                        self.caught_up = (r.caught_up.position, r.caught_up.version)
                        self.items.append(("caught_up", r.caught_up.position, r.caught_up.version))
                        if self._pause:
                            self._pause = False
                            self.paused = True
                            self.gate.clear()
                    elif which == "checkpoint":
                        self.checkpoints += 1
                        self.last_checkpoint = r.checkpoint.position
                        self.items.append(("checkpoint", r.checkpoint.position))
                    else:
                        self.items.append(("empty",))
                    self.cond.notify_all()
        except StopIteration:
            pass
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        except Exception as e:  # a bug of the test itself: make it visible
            code, details = "client exception", repr(e)
        with self.cond:
            self.code, self.details = code, details
            self.ended_at = time.monotonic()
            self.cond.notify_all()

    def summary(self):
        return (f"{self.label}: {self.n_events} events (last position {self.last_position}, "
                f"last version {self.last_version}), caught_up {self.caught_up}, "
                f"{self.checkpoints} checkpoints (last {self.last_checkpoint}), "
                f"ended: {self.code} {self.details!r}")

    def wait(self, pred, what, timeout=WAIT):
        """Waits (bounded) until pred() holds (called under the lock); fails with a summary."""
        with self.cond:
            self.cond.wait_for(lambda: pred() or self.code is not None, timeout)
            if pred():
                return
            why = "before the call ended" if self.code is not None else f"within {timeout:.0f} s"
        raise AssertionError(f"{self.summary()}: no {what} {why}")

    def wait_caught_up(self, timeout=WAIT):
        self.wait(lambda: self.caught_up is not None, "caught_up", timeout)
        return self.caught_up

    def wait_position(self, position, timeout=WAIT):
        self.wait(lambda: self.last_position >= position, f"event at position {position}", timeout)

    def wait_version(self, version, timeout=WAIT):
        self.wait(lambda: self.last_version >= version, f"event at version {version}", timeout)

    def wait_checkpoint(self, position, timeout=WAIT):
        self.wait(lambda: self.last_checkpoint is not None and self.last_checkpoint >= position,
                  f"checkpoint at or past {position}", timeout)

    def wait_end(self, timeout=WAIT):
        with self.cond:
            self.cond.wait_for(lambda: self.code is not None, timeout)
            if self.code is None:
                raise AssertionError(f"{self.summary()}: the call did not end within {timeout:.0f} s")
        return self.code, self.details

    def resume(self):
        with self.cond:
            self.paused = False
        self.gate.set()

    def snapshot(self):
        with self.cond:
            return list(self.items)

    def close(self):
        self.call.cancel()
        self.gate.set()
        self.thread.join(10)


class Subs:
    """Subscriptions of one test, all cancelled at its end."""

    def __init__(self):
        self.subs = []

    def add(self, sub):
        self.subs.append(sub)
        return sub

    def close(self):
        for s in self.subs:
            s.close()


@pytest.fixture
def subs():
    owned = Subs()
    yield owned
    owned.close()


def sub_all(stub, pb, subs, label=None, offset=0, types=(), prefixes=(), interval=0, **kw):
    req = pb.SubscribeToAllRequest(offset=offset, event_types=list(types),
                                   stream_prefixes=list(prefixes), checkpoint_interval=interval)
    call = stub.SubscribeToAll(req, timeout=kw.pop("timeout", SUB_DEADLINE))
    return subs.add(Sub(call, label or f"all>{offset}", **kw))


def sub_stream(stub, pb, subs, stream, version=0, label=None, **kw):
    call = stub.SubscribeToStream(pb.SubscribeToStreamRequest(stream=stream, version=version),
                                  timeout=kw.pop("timeout", SUB_DEADLINE))
    return subs.add(Sub(call, label or f"{stream}@{version}", **kw))


def last_position(resp):
    return resp.first_position + len(resp.events) - 1


def head_after(stub, stream="head-marker"):
    """Appends one event to a fresh stream and waits until it is visible: its position is the head."""
    p = append(stub, unique(stream), 1).first_position
    wait_global(stub, p)
    return p


def read_log_until(stub, offset, position, timeout=15.0):
    """The global stream from offset up to at least position (bounded wait for it to be visible)."""
    def read():
        log = read_global_all(stub, offset)
        return log if log and log[-1].position >= position else None
    return poll(read, timeout=timeout, interval=0.05, what=f"global position {position} to be visible")


def grpc_gauge(server):
    return scrape(server)[1].value(GAUGE, transport="grpc")


def wait_gauge(server, want, transport="grpc", timeout=15.0):
    poll(lambda: scrape(server)[1].value(GAUGE, transport=transport) == want, timeout=timeout,
         interval=0.05, what=f'{GAUGE}{{transport="{transport}"}} == {want} '
                             f'(now {scrape(server)[1].value(GAUGE, transport=transport)})')


def describe_diff(got, want):
    """Where two position lists part: duplicates, missing, extra, first difference."""
    dups = sorted(p for p, n in _counts(got).items() if n > 1)[:10]
    gs, ws = set(got), set(want)
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return (f"got {len(got)} events, want {len(want)}; duplicates {dups}; "
            f"missing {sorted(ws - gs)[:10]} ({len(ws - gs)}); extra {sorted(gs - ws)[:10]} ({len(gs - ws)}); "
            f"first difference at index {first}: got {got[first:first + 5]} want {want[first:first + 5]}")


def _counts(xs):
    out = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


def check_all_sub(sub, offset, expected, head):
    """
    The SubscribeToAll contract on everything a subscription received, given the
    events (from GetGlobalStream) it had to deliver: exactly those, once each, in
    position order, with the same bytes; exactly one caught_up, at or after the
    offset, splitting the events by its position; checkpoints never going back,
    never past the head, and each preceded by every expected event up to it.
    """
    items = sub.snapshot()
    assert not [i for i in items if i[0] == "empty"], f"{sub.label}: a response with no content set"
    events = [i[1] for i in items if i[0] == "event"]
    got = events if sub.compact else [e.position for e in events]
    want = [e.position for e in expected] if expected and not isinstance(expected[0], int) else list(expected)
    assert got == want, f"{sub.label} (offset {offset}): {describe_diff(got, want)}"
    if not sub.compact:
        for e, w in zip(events, expected):
            assert e == w, f"{sub.label}: event at position {w.position} differs from the read:\n{e}\nvs\n{w}"

    cus = [i for i in items if i[0] == "caught_up"]
    assert len(cus) == 1, f"{sub.label}: {len(cus)} caught_up messages, want exactly one: {cus}"
    cu_index = items.index(cus[0])
    cu_pos = cus[0][1]
    assert offset <= cu_pos <= head, f"{sub.label}: caught_up position {cu_pos} outside [{offset}, {head}]"
    pos = lambda i: i[1] if sub.compact else i[1].position  # noqa: E731
    before = [pos(i) for i in items[:cu_index] if i[0] == "event"]
    after = [pos(i) for i in items[cu_index + 1:] if i[0] == "event"]
    assert all(p <= cu_pos for p in before), \
        f"{sub.label}: events before caught_up({cu_pos}) go past it: {[p for p in before if p > cu_pos][:5]}"
    assert all(p > cu_pos for p in after), \
        f"{sub.label}: events after caught_up({cu_pos}) at or below it: {[p for p in after if p <= cu_pos][:5]}"

    check_checkpoints(sub, items, offset, want, head)
    return items


def check_checkpoints(sub, items, offset, want, head):
    """Checkpoint P: every wanted position <= P delivered before it; positions never go back or past head."""
    delivered = 0
    prev = None
    j = 0  # wanted positions <= P, counted incrementally
    for i in items:
        if i[0] == "event":
            delivered += 1
        elif i[0] == "checkpoint":
            p = i[1]
            assert offset <= p <= head, f"{sub.label}: checkpoint {p} outside [{offset}, {head}]"
            assert prev is None or p >= prev, f"{sub.label}: checkpoint went back from {prev} to {p}"
            prev = p
            while j < len(want) and want[j] <= p:
                j += 1
            assert delivered >= j, (f"{sub.label}: checkpoint {p} came after {delivered} events, but "
                                    f"{j} matching events are at or below it (next missing: "
                                    f"{want[delivered] if delivered < len(want) else None})")


# --------------------------------------------------------------------------
# Exactly once, in order, across the catch-up/live switch
# --------------------------------------------------------------------------

def test_exactly_once_in_order_across_catch_up_and_live(server, stub, pb, subs):
    """
    8 writers append (unary, version -1) to 96 streams on every shard; subscribers
    start at random offsets between 0 and the head while they write (each while
    writes are in flight, paced by an allowance of appends); every subscriber sees
    exactly the global stream from its offset, once, in order, one caught_up.
    """
    rng = random.Random(SEED)
    writers, per_writer, mid_subs = 8, 12, 6
    tag = unique("eo")
    streams = [f"{tag}-{i}" for i in range(writers * per_writer)]
    assert {shard_of(s, SHARDS) for s in streams} == set(range(SHARDS)), "streams must cover every shard"
    for i, st in enumerate(streams[:40]):  # something to catch up on
        append(stub, st, 1 + i % 3)
    head0 = head_after(stub)

    started = [(sub_all(stub, pb, subs, "from-0", 0), 0), (sub_all(stub, pb, subs, "from-head", head0, interval=7), head0)]

    cv = threading.Condition()
    st = {"claimed": 0, "done": 0, "allowed": 0, "max_pos": head0, "errors": []}
    total = SUB_APPENDS

    def writer(w):
        r = random.Random(SEED * 31 + w)
        mine = streams[w::writers]
        while True:
            with cv:
                ok = cv.wait_for(lambda: st["claimed"] < min(st["allowed"], total)
                                 or st["claimed"] >= total or st["errors"], timeout=60)
                if not ok:
                    st["errors"].append(f"writer {w}: no allowance for 60 s")
                if not ok or st["claimed"] >= total or st["errors"]:
                    cv.notify_all()
                    return
                st["claimed"] += 1
            n = r.randint(1, 4)
            try:
                resp = append(stub, r.choice(mine),
                              [event_data(f"T{r.randrange(3)}", b'{"w":%d,"i":%d}' % (w, i)) for i in range(n)])
            except grpc.RpcError as e:
                with cv:
                    st["errors"].append(f"writer {w}: {e.code()} {e.details()}")
                    cv.notify_all()
                return
            with cv:
                st["done"] += 1
                st["max_pos"] = max(st["max_pos"], last_position(resp))
                cv.notify_all()

    threads = [threading.Thread(target=writer, args=(w,), name=f"writer-{w}") for w in range(writers)]
    for t in threads:
        t.start()
    step = total // (mid_subs + 1)
    try:
        with cv:
            st["allowed"] = step
            cv.notify_all()
        for k in range(mid_subs):
            with cv:  # start the next subscriber while half of the current allowance is still being written
                assert cv.wait_for(lambda: st["done"] >= st["allowed"] - step // 2 or st["errors"], timeout=60), \
                    f"writers stalled at {st['done']} appends"
                assert not st["errors"], st["errors"]
                head = st["max_pos"]
            wait_global(stub, head)
            offset = head if k == mid_subs - 1 else rng.randint(0, head)
            started.append((sub_all(stub, pb, subs, f"mid{k}>{offset}", offset,
                                    interval=rng.choice([0, 1, 7, 100])), offset))
            with cv:
                st["allowed"] += step
                cv.notify_all()
        with cv:
            st["allowed"] = total
            cv.notify_all()
    finally:
        for t in threads:
            t.join(120)
    assert not any(t.is_alive() for t in threads), "writers did not finish within 120 s"
    assert not st["errors"], st["errors"]
    assert st["done"] == total

    # A last event after every write: once a subscriber has it, it has everything.
    sentinel = append(stub, f"{tag}-sentinel", 1).first_position
    for sub, _ in started:
        sub.wait_position(sentinel, timeout=60)
    log = read_log_until(stub, 0, sentinel)
    assert log[-1].position == sentinel, f"the global stream ends at {log[-1].position}, sentinel {sentinel}"
    for sub, offset in started:
        check_all_sub(sub, offset, [e for e in log if e.position > offset], sentinel)
        assert sub.code is None, f"{sub.summary()}: ended early"


# --------------------------------------------------------------------------
# SubscribeToStream
# --------------------------------------------------------------------------

def test_subscribe_to_stream_catch_up_then_live(server, stub, pb, subs):
    stream, other = unique("one"), unique("other")
    append(stub, stream, [event_data(f"T{i}", b'{"i":%d}' % i, b"m") for i in range(5)], version=0)
    append(stub, other, 3)
    sub = sub_stream(stub, pb, subs, stream, 2)
    pos, version = sub.wait_caught_up()
    assert version == 5, f"caught_up version {version}, want 5 (the next version to come)"
    before = [i[1].version for i in sub.snapshot() if i[0] == "event"]
    assert before == [2, 3, 4], f"catch-up from version 2 of a 5-event stream delivered versions {before}"

    for k in range(3):  # live, interleaved with another stream
        append(stub, other, 2)
        append(stub, stream, [event_data("Live", b'{"k":%d}' % k) for _ in range(2)])
    sub.wait_version(10)
    final = read_stream_all(stub, stream)
    assert len(final) == 11
    items = sub.snapshot()
    events = [i[1] for i in items if i[0] == "event"]
    assert [e.version for e in events] == list(range(2, 11)), [e.version for e in events]
    assert all(e.stream == stream for e in events), {e.stream for e in events}
    assert events == final[2:], "events differ from what GetStream returns"
    kinds = [i[0] for i in items if i[0] != "checkpoint"]
    assert kinds == ["event"] * 3 + ["caught_up"] + ["event"] * 6, kinds
    assert sub.code is None, sub.summary()


def test_subscribe_to_a_stream_that_does_not_exist_yet(server, stub, pb, subs):
    stream = unique("later")
    sub = sub_stream(stub, pb, subs, stream, 0)
    _, version = sub.wait_caught_up()
    assert version == 0, f"caught_up of an empty stream says version {version}"
    assert sub.n_events == 0
    append(stub, unique("noise"), 2)
    append(stub, stream, 3, version=0)
    sub.wait_version(2)
    events = [i[1] for i in sub.snapshot() if i[0] == "event"]
    assert events == read_stream_all(stub, stream)
    assert [e.version for e in events] == [0, 1, 2]


# --------------------------------------------------------------------------
# Filters and checkpoints
# --------------------------------------------------------------------------

def test_filters_types_prefixes_and_both(server, stub, pb, subs):
    uid = unique("f").split("-")[1]
    A, B, C, D = (f"{x}-{uid}" for x in "ABCD")
    P, Q, R = f"pf{uid}-", f"qf{uid}-", f"rf{uid}-"
    rng = random.Random(SEED + 1)
    offset = head_after(stub)

    def write_mix(n):
        last = 0
        for _ in range(n):
            stream = rng.choice([P, Q, R]) + str(rng.randrange(4))
            r = append(stub, stream, [event_data(rng.choice([A, B, C, D]), b"{}") for _ in range(rng.randint(1, 3))])
            last = last_position(r)
        return last

    write_mix(40)  # caught up on
    filters = {
        "types A,C": dict(types=[A, C]),
        "prefix P": dict(prefixes=[P]),
        "types A + prefixes P,Q": dict(types=[A], prefixes=[P, Q]),
    }
    started = {name: sub_all(stub, pb, subs, name, offset, interval=5, **f) for name, f in filters.items()}
    for s in started.values():
        s.wait_caught_up()
    write_mix(40)  # live
    sentinel = last_position(append(stub, P + "end", [event_data(A)]))  # matches every filter
    for s in started.values():
        s.wait_position(sentinel)
    # Then only non-matching events: the timer reports the position moving past them.
    head = last_position(append(stub, R + "end", [event_data(D) for _ in range(3)]))
    for s in started.values():
        s.wait_checkpoint(head)
    log = read_log_until(stub, offset, head)

    def matches(e, f):
        return ((not f.get("types") or e.type in f["types"]) and
                (not f.get("prefixes") or any(e.stream.startswith(p) for p in f["prefixes"])))

    for name, f in filters.items():
        want = [e for e in log if matches(e, f)]
        assert len(want) >= 3 and len(want) < len(log), f"{name}: a useless mix ({len(want)} of {len(log)})"
        check_all_sub(started[name], offset, want, head)


def test_checkpoints_advance_when_nothing_matches(server, stub, pb, subs):
    """
    Only non-matching events are written: checkpoints still come (every <= 10
    events scanned for interval 10; on the 50 ms timer for a huge interval),
    their positions increase round after round up to the head, no event arrives.
    """
    uid = unique("cp").split("-")[1]
    offset = head_after(stub)
    by_count = sub_all(stub, pb, subs, "interval 10", offset, types=[f"Nothing-{uid}"], interval=10)
    by_timer = sub_all(stub, pb, subs, "timer only", offset, prefixes=[f"nothing-{uid}-"], interval=1_000_000)
    both = (by_count, by_timer)
    for s in both:
        s.wait_caught_up()
    ends = []
    for rnd in range(5):
        for k in range(4):
            r = append(stub, f"cp-{uid}-{k}", [event_data("Other", b"{}") for _ in range(5)])
        ends.append(last_position(r))
        for s in both:
            s.wait_checkpoint(ends[-1])
    head = ends[-1]
    log = read_log_until(stub, offset, head)
    assert log[-1].position == head
    for s in both:
        items = check_all_sub(s, offset, [], head)
        cps = [i[1] for i in items if i[0] == "checkpoint"]
        assert cps[-1] == head, f"{s.label}: last checkpoint {cps[-1]}, head {head}"
        assert len(set(cps)) >= len(ends), f"{s.label}: checkpoints {cps} do not advance with each round {ends}"
    # At most checkpoint_interval events scanned between two checkpoints.
    gaps, tail = checkpoint_gaps(by_count, [e.position for e in log], offset)
    assert not [g for g in gaps if g[2] > 10] and tail == 0, \
        f"interval 10: (from, to, events scanned) {[g for g in gaps if g[2] > 10]}, {tail} after the last"
    # Nothing moves any more: no new checkpoint position (a bounded look over 10 timer periods).
    seen = by_timer.checkpoints
    with by_timer.cond:
        by_timer.cond.wait_for(lambda: by_timer.checkpoints > seen + 1, timeout=10 * CHECKPOINT_MS / 1000)
    later = [i[1] for i in by_timer.snapshot() if i[0] == "checkpoint"][seen:]
    assert all(p == head for p in later) and len(later) <= 1, \
        f"checkpoints while the position did not move: {later}"


def checkpoint_gaps(sub, log_positions, offset):
    """Events scanned (global positions) between consecutive checkpoints, from the offset."""
    gaps, prev = [], offset
    for p in [i[1] for i in sub.snapshot() if i[0] == "checkpoint"]:
        gaps.append((prev, p, sum(1 for q in log_positions if prev < q <= p)))
        prev = p
    return gaps, sum(1 for q in log_positions if q > prev)


def test_checkpoint_interval_counts_delivered_events_too(server, stub, pb, subs):
    """
    proto: "Send a checkpoint after at most this many events scanned without one
    (delivered or filtered out)". With checkpoint_interval 5 and a filter that
    every new event matches, 30 events scanned mean checkpoints at most 5 events
    apart (and at most 5 scanned after the last one).
    """
    uid = unique("ci").split("-")[1]
    A = f"A-{uid}"
    offset = head_after(stub)
    sub = sub_all(stub, pb, subs, "all match, interval 5", offset, types=[A], interval=5)
    sub.wait_caught_up()
    last = 0
    for i in range(30):
        last = last_position(append(stub, f"ci-{uid}", [event_data(A, b'{"i":%d}' % i)]))
    sub.wait_position(last)
    log = read_log_until(stub, offset, last)
    positions = [e.position for e in log]
    check_all_sub(sub, offset, log, last)
    # The checkpoint the last scan may owe is sent with it: a bounded wait for it, if it is due.
    with sub.cond:
        sub.cond.wait_for(lambda: sub.last_checkpoint is not None and sub.last_checkpoint >= last,
                          timeout=1.0)
    gaps, tail = checkpoint_gaps(sub, positions, offset)
    too_far = [g for g in gaps if g[2] > 5]
    assert not too_far and tail <= 5, (
        f"checkpoint_interval 5, 30 matching events delivered: checkpoints "
        f"{[g[1] for g in gaps]}; gaps over 5 events (from, to, scanned): {too_far}; "
        f"{tail} events scanned after the last checkpoint")


# --------------------------------------------------------------------------
# A consumer that stops reading
# --------------------------------------------------------------------------

def server_memory(server):
    """The server's resident memory less its file-backed pages (VmRSS - RssFile), bytes; and the fields."""
    fields = {}
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"] - fields.get("RssFile", 0), fields


def test_slow_consumer_is_not_dropped_and_memory_stays_bounded(server_factory, pb, subs):
    """
    SUBSCRIPTION_BUFFER=64K. A subscriber stops reading right after caught_up while 4
    writers append SLOW_EVENTS events in appends of 100. Memory: VmRSS includes the
    LMDB map's file-backed pages (RssFile), which grow with the data written whether
    or not anyone subscribes, so the bound is on VmRSS - RssFile (anonymous memory:
    heap, ASan's quarantine and shadow): at most its value after a first, identical
    run without a subscriber plus 64 MiB. The payload is sized so that the events
    written past the stalled consumer hold >= 128 MiB: a server that queued them in
    memory fails the bound twice over. Writers keep at least half their throughput
    of the run without a subscriber. Then the consumer resumes and gets every event
    exactly once, in order.
    """
    s = server_factory.new(env={"SHARDS": "2", "SUBSCRIPTION_BUFFER": "64K"})
    wait_prom_ready(s)
    stub = s.stub()
    n_writers, batch = 4, 100
    payload = max(64, (128 * MIB) // SLOW_EVENTS)
    appends_each = max(1, SLOW_EVENTS // batch // n_writers)
    written = appends_each * batch * n_writers
    volume = written * payload

    def run_writers(tag):
        ends, errors = [], []
        def w(i):
            req = pb.AppendToStreamRequest(stream=f"{tag}-{i}", version=-1,
                                           events=[event_data("Slow", b"x" * payload) for _ in range(batch)])
            try:
                for _ in range(appends_each):
                    ends.append(last_position(stub.AppendToStream(req, timeout=RPC_TIMEOUT)))
            except grpc.RpcError as e:
                errors.append(f"{e.code()} {e.details()}")
        threads = [threading.Thread(target=w, args=(i,)) for i in range(n_writers)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        elapsed = time.monotonic() - t0
        assert not any(t.is_alive() for t in threads), f"{tag}: writers still running after 300 s"
        assert not errors, f"{tag}: {errors[:3]}"
        return elapsed, max(ends)

    base_time, head = run_writers(unique("alone"))
    wait_global(stub, head)
    base_mem, base_fields = server_memory(s)

    sub = sub_all(stub, pb, subs, "stalled", head, compact=True, pause_after_caught_up=True)
    assert sub.wait_caught_up()[0] == head
    with sub.cond:
        assert sub.paused

    peak = {"mem": base_mem, "fields": base_fields}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            m, fields = server_memory(s)
            if m > peak["mem"]:
                peak["mem"], peak["fields"] = m, fields
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        slow_time, last = run_writers(unique("past"))
    finally:
        stop.set()
        sampler.join(10)
    wait_global(stub, last)
    m, fields = server_memory(s)
    if m > peak["mem"]:
        peak["mem"], peak["fields"] = m, fields
    assert grpc_gauge(s) == 1, "the stalled subscription is gone from the gauge"
    assert sub.code is None, f"the stalled subscription was ended: {sub.summary()}"
    with sub.cond:
        assert sub.n_events == 0 and sub.paused

    growth = peak["mem"] - base_mem
    assert growth <= 64 * MIB, (
        f"server memory (VmRSS - RssFile) grew by {growth / MIB:.1f} MiB with a stalled subscriber "
        f"(written past it: {written} events, {volume / MIB:.0f} MiB of payload; bound 64 MiB). "
        f"before: {base_fields}, peak: {peak['fields']}")
    ratio = base_time / slow_time
    assert ratio >= 0.5, (f"writers slowed by a stalled subscriber: {written / slow_time:.0f} events/s vs "
                          f"{written / base_time:.0f} alone (ratio {ratio:.2f}, want >= 0.5)")

    sub.resume()
    sub.wait_position(last, timeout=120)
    log = read_log_until(stub, head, last)
    assert len(log) == written
    check_all_sub(sub, head, [e.position for e in log], last)
    print(f"\nslow consumer: {written} events x {payload} B; alone {base_time:.1f} s, with a stalled "
          f"subscriber {slow_time:.1f} s (ratio {ratio:.2f}); memory growth {growth / MIB:.1f} MiB")


# --------------------------------------------------------------------------
# Ends: cancel, deadline, channel closed, TCP reset; metrics
# --------------------------------------------------------------------------

def raw_subscribe(server, pb, req, method="SubscribeToAll"):
    raw = RawH2(server.grpc_port)
    sid = raw.headers(f"/api.EventStore/{method}")
    raw.data(sid, grpc_frame(req.SerializeToString()), end_stream=True)
    return raw, sid


def raw_wait(raw, sid, pred, what, timeout=WAIT):
    r = raw.responses[sid]
    deadline = time.monotonic() + timeout
    while not pred(r):
        if r.done or raw.closed:
            raise AssertionError(f"raw subscription ended before {what}: {r!r}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"raw subscription: no {what} within {timeout:.0f} s: {r!r}")
        raw._receive_once(deadline)
    return r


def raw_caught_up(pb, r):
    return any(pb.SubscriptionResponse.FromString(m).HasField("caught_up") for m in raw_messages(r))


def test_cancel_deadline_disconnect_free_subscriptions(server_factory, pb, subs):
    s = server_factory.new()
    wait_prom_ready(s)
    stub = s.stub()
    stream = unique("c")
    append(stub, stream, 3)
    m0 = scrape(s)[1]
    assert m0.has(GAUGE, transport="grpc"), f'{GAUGE}{{transport="grpc"}} missing'
    assert m0.value(GAUGE, transport="grpc") == 0
    delivered0 = m0.value("eventflowdb_subscription_events_delivered_total")

    cancelled = sub_all(stub, pb, subs, "cancelled", 0)
    by_stream = sub_stream(stub, pb, subs, stream, 0, label="stream, cancelled")
    own = s.channel(own_connection=True)
    closed = sub_all(s.stub(own), pb, subs, "channel closed", 0)
    raw, sid = raw_subscribe(s, pb, pb.SubscribeToAllRequest(offset=0))
    try:
        for sub in (cancelled, by_stream, closed):
            sub.wait_caught_up()
        raw_wait(raw, sid, lambda r: raw_caught_up(pb, r), "caught_up")
        wait_gauge(s, 4)

        # Live events reach all of them; the delivered counter and the lag histograms move.
        last = last_position(append(stub, stream, 2))
        for sub in (cancelled, by_stream, closed):
            sub.wait_position(last)
        poll(lambda: scrape(s)[1].value("eventflowdb_subscription_events_delivered_total") >= delivered0 + 3 * 5,
             timeout=10, what="eventflowdb_subscription_events_delivered_total to count the events delivered")
        # Lag is observed per subscription on the checkpoint timer (1 s here): bounded wait.
        lags = ("eventflowdb_subscription_lag_events", "eventflowdb_subscription_lag_seconds")
        m = poll(lambda: (lambda m: m if all(m.value(h + "_count") > 0 for h in lags) else None)(scrape(s)[1]),
                 timeout=10, what="the lag histograms to observe the active subscriptions")
        for h in lags:
            assert m.types.get(h) == "histogram", f"{h}: TYPE {m.types.get(h)!r}, want histogram"
            assert m.value(h + "_bucket", le="+Inf") == m.value(h + "_count"), f"{h}: +Inf bucket != count"

        # A deadline: DEADLINE_EXCEEDED on time, and the gauge goes back.
        t0 = time.monotonic()
        timed = sub_all(stub, pb, subs, "deadline", 0, timeout=3.0)
        code, details = timed.wait_end(timeout=15)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline: {code} {details!r}"
        assert timed.caught_up is not None, "the deadline subscription never caught up"
        assert time.monotonic() - t0 < 10, "the deadline ended the call late"
        wait_gauge(s, 4)

        cancelled.close()
        assert cancelled.wait_end()[0] == grpc.StatusCode.CANCELLED
        wait_gauge(s, 3)
        own.close()
        closed.wait_end()
        wait_gauge(s, 2)
        raw.abort()  # TCP reset, no goodbye
        wait_gauge(s, 1)
        by_stream.close()
        wait_gauge(s, 0)
    finally:
        raw.close()

    # Everything still works: a new subscription, counted, then freed.
    again = sub_all(stub, pb, subs, "again", 0)
    again.wait_caught_up()
    wait_gauge(s, 1)
    again.close()
    wait_gauge(s, 0)
    # The factory stops the server: exit 0 and no LeakSanitizer report (nothing left behind).


def test_sigterm_ends_subscriptions_with_unavailable(server_factory, pb, subs):
    s = server_factory.new()
    stub = s.stub()
    stream = unique("t")
    append(stub, stream, 2)
    live = [sub_all(stub, pb, subs, "all", 0), sub_stream(stub, pb, subs, stream, 0),
            sub_all(stub, pb, subs, "filtered", 0, types=["Nope"], interval=1)]
    raw, sid = raw_subscribe(s, pb, pb.SubscribeToStreamRequest(stream=stream, version=0), "SubscribeToStream")
    try:
        for sub in live:
            sub.wait_caught_up()
        raw_wait(raw, sid, lambda r: raw_caught_up(pb, r), "caught_up")
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        frames = raw_frames_until_closed(raw, STOP_TIMEOUT)
        for sub in live:
            code, details = sub.wait_end(timeout=STOP_TIMEOUT)
            assert code == grpc.StatusCode.UNAVAILABLE, f"{sub.label}: ended with {code} {details!r} after SIGTERM"
        seen = [(t, f, i) for t, f, i, _ in frames]
        goaway = next((k for k, f in enumerate(frames) if f[0] == 0x7), None)
        trailers = next((k for k, f in enumerate(frames) if f[0] == 0x1 and f[2] == sid and f[1] & 0x1), None)
        assert goaway is not None, f"no GOAWAY after SIGTERM; frames (type, flags, stream): {seen}"
        assert trailers is not None, \
            f"the subscription open at SIGTERM got no trailers (HEADERS with END_STREAM); frames: {seen}"
        assert goaway < trailers, f"the trailers came before the GOAWAY: {seen}"
        last_sid = int.from_bytes(frames[goaway][3][0:4], "big") & 0x7FFFFFFF
        assert last_sid >= sid, f"GOAWAY last stream id {last_sid} cuts off the open subscription {sid}"
        fields = header_block(raw, frames, trailers)
        assert fields.get("grpc-status") == "14", \
            f"a subscription open at SIGTERM must end with grpc-status 14 (UNAVAILABLE): {fields}"
        try:
            rc = s.proc.wait(timeout=max(1.0, STOP_TIMEOUT - (time.monotonic() - t0)))
        except Exception:
            pytest.fail(f"no exit within {STOP_TIMEOUT:.0f} s of SIGTERM:\n{s.stderr_tail()}", pytrace=False)
        assert rc == 0, f"exit code {rc} after SIGTERM"
        assert s.stop(check=True) == 0
    finally:
        raw.close()


# --------------------------------------------------------------------------
# A store that cannot be read
# --------------------------------------------------------------------------

def test_a_call_that_fails_mid_message_sends_the_message_whole_first(server, pb):
    """
    A subscription's deadline passes while a 100 KB event is partly sent (the
    client's window took 30,000 bytes): the rest of the event goes out before
    the trailers, so the body stays whole gRPC messages.
    """
    import h2.settings
    stream = unique("whole")
    append(server.stub(), stream, [event_data(data=b"z" * 100_000)])
    deadlines_before = scrape(server)[1].value("eventflowdb_requests_total", transport="grpc",
                                               code="DEADLINE_EXCEEDED")
    with RawH2(server.grpc_port, timeout=30) as raw:
        raw.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 30_000})
        raw.flush()
        sid = raw.headers("/api.EventStore/SubscribeToStream", grpc_timeout="300m")
        raw.data(sid, grpc_frame(pb.SubscribeToStreamRequest(stream=stream).SerializeToString()),
                 end_stream=True)
        response = raw.responses[sid]
        deadline = time.monotonic() + WAIT
        while len(response.data) < 30_000:  # the client reads but gives no window back
            assert time.monotonic() < deadline, f"{len(response.data)} bytes came"
            raw.read_unacknowledged(deadline)
        poll(lambda: scrape(server)[1].value("eventflowdb_requests_total", transport="grpc",
                                             code="DEADLINE_EXCEEDED") > deadlines_before,
             timeout=WAIT, what="the subscription's deadline to pass")
        raw.conn.acknowledge_received_data(len(response.data), sid)
        raw.flush()
        r = raw.response(sid, timeout=WAIT)
    assert r.grpc_status == 4, r
    messages = r.messages()  # asserts the body is whole messages
    assert pb.SubscriptionResponse.FromString(messages[0]).event.data == b"z" * 100_000


def test_a_stream_that_cannot_be_read_ends_its_subscription_with_an_error(server_factory, pb, subs):
    """A failed read ends the subscription with a status, not a read again at every loop turn."""
    s = server_factory.new(env={"SHARDS": "1"})
    stub = s.stub()
    damaged, intact = unique("damaged"), unique("intact")
    append(stub, damaged, 3)  # the shard's first stream: the lowest stream id, the first entry
    append(stub, intact, 2)
    s.stop()
    assert move_first_stream_run(s.data_dir) == 2
    s.start()
    stub = s.stub()
    code, _ = rpc_code(read_stream_all, stub, damaged)
    assert code == grpc.StatusCode.INTERNAL, f"GetStream of the damaged stream: {code}"

    sub = sub_stream(stub, pb, subs, damaged, 0)
    code, details = sub.wait_end(timeout=WAIT)
    assert code == grpc.StatusCode.INTERNAL, f"{sub.summary()}: ended with {code} {details!r}"
    assert details.startswith("the subscription ended:"), details

    assert [e.version for e in read_stream_all(stub, intact)] == [0, 1]
    other = sub_stream(stub, pb, subs, intact, 0)
    assert other.wait_caught_up()[1] == 2, other.summary()


def test_a_connection_whose_sends_fail_closes_after_the_subscriptions_loop(
        server_factory, pb, subs, tmp_path):
    """
    Several subscriptions on one connection, then its sends fail: the hub's loop over them sent on
    it, and a connection closed right there freed the subscriptions the loop was to visit next.
    It closes at the end of the loop turn instead; the server goes on.
    """
    flag = tmp_path / "fail-sends"
    s = server_factory.new(env={"SHARDS": "1", **failing_sends_env(flag=flag)})
    stub = s.stub()
    # Quiet once caught up (no BDP pings): its first send after the flag is the hub's.
    quiet = [("grpc.http2.bdp_probe", 0)]
    shared = s.stub(s.channel(quiet, own_connection=True))
    on_one = [sub_all(shared, pb, subs, f"filtered-{i}", types=["Nope"], interval=1)
              for i in range(3)]
    for sub in on_one:
        sub.wait_caught_up()
    wait_http_ready(s)
    flag.touch()
    try:
        # Over HTTP/1.1, which sends without nghttp2: each subscription now owes a checkpoint,
        # and the hub sends them one after another.
        expect_ok(http_append(s, unique("moves"), [{"type": "Moved"}], version=-1))
        for sub in on_one:
            code, details = sub.wait_end(timeout=WAIT)
            assert code == grpc.StatusCode.UNAVAILABLE, f"{sub.label}: {code} {details!r}"
    finally:
        flag.unlink()
    assert s.alive(), s.stderr_tail()
    stream = unique("after")
    append(stub, stream, 2)
    assert [e.version for e in read_stream_all(stub, stream)] == [0, 1]


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["", "n" * 201, "é" * 100 + "x"], ids=["empty", "201 bytes", "201 bytes utf-8"])
def test_subscribe_to_stream_bad_name_is_invalid_argument(server, stub, pb, name):
    call = stub.SubscribeToStream(pb.SubscribeToStreamRequest(stream=name, version=0), timeout=RPC_TIMEOUT)
    try:
        first = next(call)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{name!r}: {e.code()} {e.details()!r}"
        assert e.details(), "INVALID_ARGUMENT should say what is wrong"
        return
    finally:
        call.cancel()
    pytest.fail(f"SubscribeToStream({name!r}) answered {first} instead of INVALID_ARGUMENT")


def test_subscribe_to_stream_name_at_the_limit_is_fine(server, stub, pb, subs):
    name = unique("n")
    name += "é" * ((200 - len(name)) // 2)
    name += "x" * (200 - len(name.encode()))
    assert len(name.encode()) == 200
    sub = sub_stream(stub, pb, subs, name, 0)
    assert sub.wait_caught_up()[1] == 0
