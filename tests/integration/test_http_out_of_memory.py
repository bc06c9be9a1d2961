"""
The HTTP/JSON API while the server's allocations fail (fail_alloc.c preloaded:
one allocation in EVERY fails, on every thread, while a flag file exists).
Every answer says what happened: 200 with the whole document, 503
RESOURCE_EXHAUSTED, or a lost connection; never 400 INVALID_ARGUMENT for a
body that was fine, or 500 INTERNAL for data that was fine. A subscription
(Server-Sent Events) is caught up with the stored events, or ends with
event: failed, code RESOURCE_EXHAUSTED. Once allocations succeed again,
every acknowledged append is stored exactly once, as it was sent.

Sizes (environment knobs):
    EVF_HTTP_OOM_APPENDS  appends while allocations fail (default 200)
    EVF_HTTP_OOM_READS    rounds of reads while allocations fail (default 300)
"""

import http.client
import json
import os
import random
import re
import time
import uuid

from conftest import (
    API, HOST, append, b64, damage_stored_data, event_data, expect_error, failing_alloc_env,
    http_connect, http_get, read_global_all, read_stream_all, request_bytes, scrape, stream_path,
    unique, wait_http_ready,
)
from test_sse import SseConn, stream_sub_path

APPENDS = int(os.environ.get("EVF_HTTP_OOM_APPENDS") or 200)
READS = int(os.environ.get("EVF_HTTP_OOM_READS") or 300)
EVERY = 100  # one allocation in EVERY fails: most requests meet one, some do not
STREAMS = 4
EVENTS = 6  # per stream, for the reads
SUBSCRIPTIONS = 40  # their connections opened before allocations fail, as CONNECTIONS
CONNECTIONS = 64  # opened before allocations fail; far more than the requests lose
TIMEOUT = 20.0  # seconds for one exchange; a request still unanswered then was lost
# The HTTP/1.1 parser's callbacks answer 400 when they run out of memory: fixed elsewhere
# (they are to answer 503), and tolerated here.
PARSER_CALLBACK = re.compile(r"^malformed HTTP/1\.1 request: .*callback failed$")
# A stored append whose response could not be made: 500, so that nobody retries it.
STORED_WITHOUT_ANSWER = "the append is stored; out of memory building its response"


class Outcomes:
    """How many answers of each kind there were ("append: 503"); the wrong ones, as text."""

    def __init__(self):
        self.counts = {}
        self.wrong = []

    def count(self, what, kind):
        key = f"{what}: {kind}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def total(self, kind):
        return sum(n for key, n in self.counts.items() if key.endswith(f": {kind}"))

    def check_failure(self, what, status, body):
        """A non-200 answer: 503 RESOURCE_EXHAUSTED, or the parser's 400 (see PARSER_CALLBACK)."""
        try:
            error = json.loads(body)
        except ValueError:
            error = None
        if not isinstance(error, dict):
            self.wrong.append(f"{what}: {status} whose body is not a JSON object: {body[:200]!r}")
        elif status == 503 and error.get("code") == "RESOURCE_EXHAUSTED":
            self.count(what, "503")
        elif status == 400 and PARSER_CALLBACK.match(str(error.get("error"))):
            self.count(what, "parser 400")
        else:
            self.wrong.append(f"{what}: {status} {body[:200]!r}")


class Connections:
    """
    HTTP/1.1 keep-alive connections, all opened before allocations fail; a
    request that loses one goes on with the next.
    """

    def __init__(self, server, n):
        self.idle = []
        for _ in range(n):
            conn = http.client.HTTPConnection(HOST, server.http_port, timeout=TIMEOUT)
            conn.connect()
            conn.auto_open = 0  # a lost connection stays lost: no new one behind our back
            self.idle.append(conn)
        self.lost = 0

    def request(self, method, path, body=None):
        """(status, body bytes), or None when the connection was lost."""
        assert self.idle, f"all {self.lost} connections were lost"
        conn = self.idle[-1]
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            answer = r.status, r.read()
            if not r.will_close:
                return answer
        except (OSError, http.client.HTTPException):
            answer = None
        conn.close()
        self.idle.pop()
        self.lost += 1
        return answer

    def close(self):
        for conn in self.idle:
            conn.close()


def allocations_succeed_again(conns, flag):
    """Removes the flag, which the shim looks at on every allocation: requests must answer 200."""
    flag.unlink()
    for _ in range(5):
        answer = conns.request("GET", "/healthz")
        assert answer is not None and answer[0] == 200, f"allocations still fail: {answer!r}"


def end_failures(conns, flag, outcomes, what):
    """Allocations succeed again: no answer was wrong, and some ran out of memory."""
    allocations_succeed_again(conns, flag)
    conns.close()
    print(f"{what}: {outcomes.counts}, connections lost: {conns.lost}")
    assert not outcomes.wrong, "\n".join(outcomes.wrong[:20])
    assert outcomes.total("503"), f"none of the {what} ran out of memory: {outcomes.counts}"


def new_events(n):
    """
    1 to 3 events of different sizes, so that the failing allocation falls in
    a different place each time. Their data is longer than the 16 bytes
    jansson's lexer starts with: it has to grow.
    """
    return [{"type": f"OomTest{n}", "id": str(uuid.uuid4()),
             "data": os.urandom(random.randint(17, 200)),
             "metadata": os.urandom(random.randint(0, 40))}
            for _ in range(random.randint(1, 3))]


def http_append(conns, stream, events, acked, refused, unknown, outcomes):
    """One append of events; sorts out its outcome (a 503 refuses it: it must not be stored)."""
    body = json.dumps({"version": -1, "events": [
        dict(e, data=b64(e["data"]), metadata=b64(e["metadata"])) for e in events]}).encode()
    answer = conns.request("POST", f"/api/v1/stream/{stream}", body)
    ledger = unknown
    if answer is None:
        outcomes.count("append", "lost")
    elif answer[0] == 200:
        assert json.loads(answer[1])["events"] == [e["id"] for e in events], answer
        outcomes.count("append", "200")
        ledger = acked
    elif answer[0] == 500 and json.loads(answer[1]).get("error") == STORED_WITHOUT_ANSWER:
        outcomes.count("append", "stored, no answer")
    else:
        outcomes.check_failure("append", *answer)
        if answer[0] == 503:
            ledger = refused
    for e in events:
        ledger[e["id"]] = (stream, e)


def test_appends_answer_out_of_memory_and_store_what_they_acknowledge(server_factory, tmp_path):
    flag = tmp_path / "fail-allocations"
    s = server_factory.new(env={"SHARDS": "2", **failing_alloc_env(flag, EVERY)})
    streams = [unique("oom-append") for _ in range(STREAMS)]
    acked, refused, unknown, outcomes = {}, {}, {}, Outcomes()
    conns = Connections(s, CONNECTIONS)
    flag.touch()
    for n in range(APPENDS):
        http_append(conns, streams[n % STREAMS], new_events(n), acked, refused, unknown, outcomes)
        assert s.alive(), f"the server died:\n{s.stderr_tail()}"
    end_failures(conns, flag, outcomes, "appends")
    assert acked, f"no append was acknowledged: {outcomes.counts}"
    appends = scrape(s)[1]
    assert appends.value("eventflowdb_appends_total", result="invalid") == 0, \
        "appends that ran out of memory were counted as invalid"
    assert appends.value("eventflowdb_appends_total", result="error") > 0

    stub = s.stub()
    stored = {}
    for stream in streams:
        for e in read_stream_all(stub, stream):
            assert e.id not in stored, f"event {e.id} stored twice"
            stored[e.id] = (e.stream, e.type, e.data, e.metadata)
    for event_id, (stream, event) in acked.items():
        assert stored.get(event_id) == (stream, event["type"], event["data"], event["metadata"]), \
            f"acknowledged append {event_id} to {stream} is stored as {stored.get(event_id)}"
    assert not set(stored) & set(refused), "appends answered 503 were stored"
    assert set(stored) <= set(acked) | set(unknown), "an event was stored that was never sent"
    s.stop()  # exit code 0, nothing leaked


def read(conns, what, path, outcomes, check):
    """A GET; check(document) says what is wrong with the JSON of a 200, or None."""
    answer = conns.request("GET", path)
    if answer is None:
        outcomes.count(what, "lost")
    elif answer[0] == 200:
        try:
            wrong = check(json.loads(answer[1]))
        except (ValueError, AttributeError) as e:
            wrong = f"not a JSON object ({e})"
        if wrong:
            outcomes.wrong.append(f"{what} {path}: 200 {wrong}: {answer[1][:200]!r}")
        outcomes.count(what, "200")
    else:
        outcomes.check_failure(what, *answer)


def as_stored(e):
    """An api.Event as its JSON reads."""
    return {"id": e.id, "stream": e.stream, "type": e.type, "data": b64(e.data)}


def same_events(got, want):
    """What is wrong with the events of a page (JSON) against the stored ones, or None."""
    if not isinstance(got, list) or len(got) != len(want):
        return f"{len(got) if isinstance(got, list) else got!r} events, not {len(want)}"
    for g, w in zip(got, want):
        if {k: g.get(k) for k in w} != w:
            return f"event {g} is not {w}"
    return None


def error_response(conn):
    """(status, body) of a complete response that is not a stream, or None while incomplete."""
    _, sep, body = bytes(conn.raw).partition(b"\r\n\r\n")
    length = int(conn.headers.get("content-length", "-1"))
    return (conn.status, body[:length]) if sep and 0 <= length <= len(body) else None


def subscribe(sock, port, stream, outcomes, stored):
    """
    Subscribes to stream from its start on sock (connected before allocations
    failed), until the subscription is caught up, fails, or is lost. Caught
    up, it has sent the stored events.
    """
    path = stream_sub_path(stream, version=0)
    conn = SseConn(port, path, connect=False)
    conn.sock = sock

    def failed():
        return [r for r in conn.parser.special if r.get("event") == "failed"]

    def done():
        return (conn.closed or failed() or conn.parser.caught_ups() or
                (conn.status not in (None, 200) and error_response(conn)))

    deadline = time.monotonic() + TIMEOUT
    try:
        sock.sendall(request_bytes("GET", path))
        while not done() and conn.pump(deadline):
            pass
    finally:
        sock.close()
    if conn.status not in (None, 200) and error_response(conn):
        outcomes.check_failure("subscription", *error_response(conn))
    elif failed():
        code = json.loads(failed()[0]["data"]).get("code")
        if code == "RESOURCE_EXHAUSTED":
            outcomes.count("subscription", "failed")
        else:
            outcomes.wrong.append(f"subscription: event: failed {failed()[0]['data']}")
    elif conn.parser.caught_ups():
        wrong = same_events([json.loads(r["data"]) for r in conn.parser.events], stored)
        if wrong:
            outcomes.wrong.append(f"subscription: caught up, {wrong}")
        outcomes.count("subscription", "caught up")
    elif conn.closed:
        outcomes.count("subscription", "lost")
    else:
        outcomes.wrong.append(f"subscription: no end within {TIMEOUT:.0f} s: {conn.describe()}")


def test_reads_answer_out_of_memory(server_factory, tmp_path):
    flag = tmp_path / "fail-allocations"
    s = server_factory.new(env={"SHARDS": "2", **failing_alloc_env(flag, EVERY)})
    stub = s.stub()
    streams = [unique("oom-read") for _ in range(STREAMS)]
    for stream in streams:
        append(stub, stream, [event_data(type_="OomRead", data=os.urandom(random.randint(1, 200)),
                                         id=str(uuid.uuid4())) for _ in range(EVENTS)])
    stored = {stream: [as_stored(e) for e in read_stream_all(stub, stream)] for stream in streams}
    everything = [as_stored(e) for e in read_global_all(stub, expect_at_least=STREAMS * EVENTS)]
    conns = Connections(s, CONNECTIONS)
    sockets = [http_connect(s.http_port) for _ in range(min(SUBSCRIPTIONS, READS))]
    outcomes = Outcomes()
    flag.touch()
    for n in range(READS):
        stream, event = random.choice(streams), random.choice(everything)
        limit = random.randint(1, len(everything))
        reads = [
            ("stream read", stream_path(stream),
             lambda page: same_events(page.get("events"), stored[stream])),
            ("global read", f"{API}/stream/all?limit={limit}",
             lambda page: same_events(page.get("events"), everything[:limit])),
            ("event read", f"{API}/event/{event['id']}", lambda got: same_events([got], [event])),
            ("uptime", f"{API}/uptime",
             lambda got: None if isinstance(got.get("uptime"), int) else "no uptime"),
        ]
        random.shuffle(reads)  # so that the failing allocation falls in a different place each time
        for what, path, check in reads:
            read(conns, what, path, outcomes, check)
        if n < len(sockets):
            subscribe(sockets[n], s.http_port, stream, outcomes, stored[stream])
        assert s.alive(), f"the server died:\n{s.stderr_tail()}"
    end_failures(conns, flag, outcomes, "reads")
    s.stop()  # exit code 0, nothing leaked


def test_a_damaged_event_is_still_internal(server_factory):
    """An event that does not decode, with memory to spare, is the server's fault: 500 INTERNAL."""
    s = server_factory.new(env={"SHARDS": "1"})
    stream, event_id = unique("damaged"), str(uuid.uuid4())
    data = os.urandom(100).hex().encode()  # 200 bytes, found once in the log
    append(s.stub(), stream, [event_data(data=data, id=event_id)])
    s.stop()
    damage_stored_data(s.data_dir, data)
    s.start()
    wait_http_ready(s)
    for path in (stream_path(stream), f"{API}/stream/all", f"{API}/event/{event_id}"):
        assert expect_error(http_get(s, path), 500, "INTERNAL") == "internal error", path
