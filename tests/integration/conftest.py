"""
Shared machinery of the gRPC integration tests: they start the real
`eventflowdb` binary on temporary data folders and free ports and talk to it
with a real gRPC client (Debian's python3-grpcio) or, for malformed traffic
on purpose, with a bare HTTP/2 client (python3-h2).

Run with /usr/bin/python3 (the interpreter that has grpcio, grpc_tools, h2):
    EVENTFLOWDB_BIN=build/asan/transport/eventflowdb PROTO_DIR=proto \
        /usr/bin/python3 -m pytest -q -x -p no:cacheprovider tests/integration/test_grpc_api.py

Environment:
    EVENTFLOWDB_BIN  the server binary (required to run, not to collect)
    PROTO_DIR        the folder holding api.proto (default: ../../proto from here)

Python stubs are generated at test time (once per session) into a temporary
folder; they are never written into the source tree.
"""

import atexit
import base64
import contextlib
import http.client
import importlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.abspath(os.environ.get("PROTO_DIR") or os.path.join(HERE, "..", "..", "proto"))

HOST = "127.0.0.1"
MIB = 1024 * 1024
DEFAULT_MAX_MESSAGE = 4 * MIB
PAGE_SIZE = 1000
# The client must never be the one that limits message sizes: we want to see
# what the server does.
BIG = 64 * MIB
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", BIG),
    ("grpc.max_send_message_length", BIG),
]
READY_TIMEOUT = 20.0  # seconds for a started server to answer Version
STOP_TIMEOUT = 10.0  # seconds for SIGTERM to end the process, with exit code 0
RPC_TIMEOUT = 30.0  # default per-call timeout of the test client (generous for ASan)

# Text that means a sanitizer found something, whatever the exit code.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "LeakSanitizer",
    "WARNING: ThreadSanitizer",
    "runtime error:",  # UndefinedBehaviorSanitizer
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# --------------------------------------------------------------------------
# Generated stubs
# --------------------------------------------------------------------------

_STUBS = {}
_STUBS_LOCK = threading.Lock()


def load_stubs():
    """Generates api_pb2 / api_pb2_grpc from PROTO_DIR/api.proto once, imports them."""
    with _STUBS_LOCK:
        if _STUBS:
            return _STUBS["pb"], _STUBS["grpc"]
        proto = os.path.join(PROTO_DIR, "api.proto")
        if not os.path.isfile(proto):
            pytest.fail(f"api.proto not found at {proto} (set PROTO_DIR)", pytrace=False)
        out = tempfile.mkdtemp(prefix="evf-stubs-")
        atexit.register(shutil.rmtree, out, ignore_errors=True)
        cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_DIR,
               f"--python_out={out}", f"--grpc_python_out={out}", "api.proto"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            pytest.fail(f"protoc failed ({' '.join(cmd)}):\n{res.stdout}\n{res.stderr}", pytrace=False)
        sys.path.insert(0, out)
        try:
            pb = importlib.import_module("api_pb2")
            pb_grpc = importlib.import_module("api_pb2_grpc")
        finally:
            sys.path.remove(out)
        _STUBS["pb"], _STUBS["grpc"], _STUBS["dir"] = pb, pb_grpc, out
        return pb, pb_grpc


@pytest.fixture(scope="session")
def pb():
    """The generated api_pb2 module (messages)."""
    return load_stubs()[0]


@pytest.fixture(scope="session")
def pb_grpc():
    """The generated api_pb2_grpc module (EventStoreStub)."""
    return load_stubs()[1]


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def free_port():
    """A TCP port nobody listens on right now (bind 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(n):
    """n distinct free ports."""
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


def poll(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Calls predicate until it returns a truthy value (returned) or timeout (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def unique(prefix="s"):
    """A stream name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def uuid7_ms(text):
    """The Unix-millisecond timestamp in a UUIDv7's first 48 bits."""
    return int(text.replace("-", "")[:12], 16)


def shard_of(stream, shards):
    """The shard owning a stream: FNV-1a 64 of the name's UTF-8 bytes, modulo the shard count."""
    h = 0xcbf29ce484222325
    for b in stream.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h % shards


def now_ms():
    return int(time.time() * 1000)


def grpc_frame(message, compressed=False):
    """A gRPC length-prefixed message: flag byte, 4-byte big-endian length, bytes."""
    return bytes([1 if compressed else 0]) + len(message).to_bytes(4, "big") + message


def describe_exit(rc):
    """An exit status in words: "0", "1", "-13 (killed by SIGPIPE)"."""
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"{rc} (killed by {signal.Signals(-rc).name})"
        except ValueError:
            return f"{rc} (killed by signal {-rc})"
    return str(rc)


def raise_nofile(want):
    """Raises this process's RLIMIT_NOFILE soft limit towards want; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def identity(b):
    return b


def raw_method(channel, path):
    """A unary-unary callable on any path that sends and returns raw bytes."""
    return channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)


def rpc_code(fn, *args, **kwargs):
    """Calls fn; returns (StatusCode, details) (OK, None on success)."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, None


def expect_code(code, fn, *args, **kwargs):
    """Asserts that fn(*args) fails with code; returns the error's details text."""
    kwargs.setdefault("timeout", RPC_TIMEOUT)
    try:
        result = fn(*args, **kwargs)
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()!r}"
        return e.details() or ""
    raise AssertionError(f"expected {code}, got OK: {result!r}")


# --------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------

_SERVERS = []  # every Server of the session, for failure reports
_CONFIG_VARS = ("DATA", "SHARDS", "SYNC", "MAP_SIZE", "PAGE_SIZE", "MAX_MESSAGE_SIZE",
                "GRPC_PORT", "HTTP_PORT", "PROM_PORT", "LOG_LEVEL")


def server_binary():
    path = os.environ.get("EVENTFLOWDB_BIN")
    if not path:
        pytest.fail("EVENTFLOWDB_BIN is not set: give the path of the eventflowdb binary "
                    "(ctest sets it)", pytrace=False)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"EVENTFLOWDB_BIN={path} is not an executable file", pytrace=False)
    return path


class Server:
    """
    One eventflowdb process. start() picks fresh free ports each time, so a
    restart on the same data folder never waits for old sockets.
    """

    def __init__(self, data_dir, log_dir, name="eventflowdb", env=None, args=None,
                 ports_as_flags=False):
        self.binary = server_binary()
        self.data_dir = str(data_dir)
        self.log_dir = str(log_dir)
        self.name = name
        self.env_overrides = {"SHARDS": "2", "SYNC": "none", "LOG_LEVEL": "info"}
        self.env_overrides.update(env or {})
        self.extra_args = list(args or [])
        self.ports_as_flags = ports_as_flags
        self.proc = None
        self.starts = 0
        self.log_path = None
        self.grpc_port = self.http_port = self.prom_port = None
        self.stopped_at = None
        self.spawned_at = None  # time.monotonic() of the last spawn
        self.last_returncode = None
        self._channels = []
        _SERVERS.append(self)

    # -- process -------------------------------------------------------------

    def spawn(self):
        """Starts the process without waiting for it to be ready."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.grpc_port, self.http_port, self.prom_port = free_ports(3)
        env = {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}
        env.update(self.env_overrides)
        env["DATA"] = self.data_dir
        args = [self.binary]
        if self.ports_as_flags:
            args += ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
                     "--prom-port", str(self.prom_port)]
        else:
            env.update(GRPC_PORT=str(self.grpc_port), HTTP_PORT=str(self.http_port),
                       PROM_PORT=str(self.prom_port))
        args += self.extra_args
        self.log_path = os.path.join(self.log_dir, f"{self.name}.{self.starts}.stderr")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.log_dir)
        self.stopped_at = None
        self.spawned_at = time.monotonic()
        return self.proc

    def start(self):
        self.spawn()
        self.wait_ready()
        return self

    @property
    def target(self):
        return f"{HOST}:{self.grpc_port}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Polls a TCP connect, then a Version RPC, until it answers (bounded)."""
        pb, pb_grpc = load_stubs()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.last_returncode = self.proc.returncode
                pytest.fail(f"{self.name} exited with {describe_exit(self.proc.returncode)} before it was ready:\n"
                            f"{self.stderr_tail()}", pytrace=False)
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                pytest.fail(f"{self.name} did not answer Version on {self.target} within "
                            f"{timeout:.0f} s:\n{self.stderr_tail()}", pytrace=False)
            try:
                socket.create_connection((HOST, self.grpc_port), timeout=min(1.0, left)).close()
            except OSError:
                time.sleep(0.02)
                continue
            ch = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
            try:
                pb_grpc.EventStoreStub(ch).Version(pb.VersionRequest(), timeout=min(2.0, max(left, 0.1)))
                return
            except grpc.RpcError:
                time.sleep(0.05)
            finally:
                ch.close()

    def stop(self, check=True):
        """SIGTERM; asserts (check) exit code 0 within STOP_TIMEOUT and no sanitizer report."""
        if self.proc is None or self.proc.poll() is not None:
            rc = None if self.proc is None else self.proc.returncode
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                self._close_channels()
                if check:
                    pytest.fail(f"{self.name} did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM:\n"
                                f"{self.stderr_tail()}", pytrace=False)
                return None
        self.stopped_at = time.monotonic()
        self.last_returncode = rc
        self._close_channels()
        if check:
            self.check_clean_exit(rc)
        return rc

    def check_clean_exit(self, rc):
        text = self.stderr_text()
        assert rc == 0, f"{self.name} exited with {describe_exit(rc)} after SIGTERM (want 0):\n{self.stderr_tail()}"
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"{self.name} stderr has {marker!r}:\n{self.stderr_tail(400)}"

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self.proc is not None:
            self.last_returncode = self.proc.returncode
        self.stopped_at = time.monotonic()
        self._close_channels()

    def stderr_text(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_tail(self, lines=150):
        text = self.stderr_text().splitlines()
        head = f"--- {self.name} (start #{self.starts}, data {self.data_dir}) {self.log_path} ---"
        return "\n".join([head] + text[-lines:])

    # -- clients ---------------------------------------------------------------

    def channel(self, options=None, own_connection=False):
        """A gRPC channel to this server, closed when the server stops."""
        opts = list(CHANNEL_OPTIONS) + list(options or [])
        if own_connection:
            # Without this, channels to one target share a TCP connection.
            opts.append(("grpc.use_local_subchannel_pool", 1))
        ch = grpc.insecure_channel(self.target, options=opts)
        self._channels.append(ch)
        return ch

    def stub(self, channel=None):
        return load_stubs()[1].EventStoreStub(channel or self.channel())

    def _close_channels(self):
        for ch in self._channels:
            with contextlib.suppress(Exception):
                ch.close()
        self._channels.clear()


class ServerFactory:
    """Makes servers for one scope and stops them all (checked) at its end."""

    def __init__(self, tmp_path_factory, label, session=None):
        self.tmp_path_factory = tmp_path_factory
        self.session = session
        self.label = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[-60:]
        self.servers = []

    def new(self, data_dir=None, start=True, **kwargs):
        base = self.tmp_path_factory.mktemp(self.label)
        if data_dir is None:
            data_dir = base / "data"
        s = Server(data_dir, base, name=f"eventflowdb-{len(self.servers)}", **kwargs)
        self.servers.append(s)
        if start:
            s.start()
        return s

    def finish(self):
        errors = []
        for s in self.servers:
            if s.proc is not None and not s.alive() and s.stopped_at is None:
                errors.append(f"{s.name} exited on its own with {describe_exit(s.proc.returncode)}:\n"
                              f"{s.stderr_tail(400)}")
                s.stopped_at = time.monotonic()
            elif s.alive():
                try:
                    s.stop(check=True)
                except BaseException as e:  # pytest.fail raises outcome exceptions
                    errors.append(str(e))
                finally:
                    s.kill()
        if not errors:
            return
        text = "\n\n".join(errors)
        if self.session is not None and (self.session.testsfailed or self.session.shouldfail):
            # The run already failed (with -x this teardown runs at session end, where
            # raising would hide the failure report): say it, do not raise.
            print(f"\n[teardown] {text}", file=sys.__stderr__, flush=True)
            return
        pytest.fail(text, pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory, pb, pb_grpc, request):
    """A fresh server for the test module (SHARDS=2, SYNC=none), stopped and checked at the end."""
    factory = ServerFactory(tmp_path_factory, request.module.__name__, request.session)
    s = factory.new()
    yield s
    factory.finish()


@pytest.fixture(scope="module")
def stub(server):
    """An EventStoreStub on the module server, 64 MiB message limits on the client side."""
    return server.stub()


@pytest.fixture
def server_factory(tmp_path_factory, pb, pb_grpc, request):
    """Makes servers for one test (factory.new(env={...}, ...)); stops and checks them after it."""
    factory = ServerFactory(tmp_path_factory, request.node.name, request.session)
    yield factory
    factory.finish()


# --------------------------------------------------------------------------
# Client-side helpers on top of the stubs
# --------------------------------------------------------------------------

def event_data(type_="TestEvent", data=b"{}", metadata=b"", id="", causation_id="", correlation_id=""):
    pb = load_stubs()[0]
    return pb.EventData(type=type_, data=data, metadata=metadata, id=id,
                        causation_id=causation_id, correlation_id=correlation_id)


def append(stub, stream, events, version=-1, timeout=RPC_TIMEOUT, **kwargs):
    """AppendToStream; events is a list of EventData or an int (that many small events)."""
    pb = load_stubs()[0]
    if isinstance(events, int):
        events = [event_data(data=b'{"n":%d}' % i) for i in range(events)]
    return stub.AppendToStream(pb.AppendToStreamRequest(stream=stream, version=version, events=events),
                               timeout=timeout, **kwargs)


def read_stream(stub, stream, version=0, limit=0, timeout=RPC_TIMEOUT):
    pb = load_stubs()[0]
    return list(stub.GetStream(pb.GetStreamRequest(stream=stream, version=version, limit=limit),
                               timeout=timeout).events)


def stream_index_entries(index_dir):
    """(key, value) byte pairs of a stopped shard's stream_index, in key order (mdb_dump)."""
    out = subprocess.run(["mdb_dump", "-s", "stream_index", index_dir], capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
    body = out[out.index("HEADER=END") + 1:out.index("DATA=END")]
    pairs = zip(body[::2], body[1::2])
    return [(bytes.fromhex(k.strip()), bytes.fromhex(v.strip())) for k, v in pairs]


def point_run_elsewhere(index_dir, key, value):
    """
    Rewrites, in the index file itself, where a stream's run says its events are: a position past
    the log's end. LMDB keeps no checksums, so only the store's own checks can notice. Stale copies
    of the page (LMDB copies on write) are rewritten too; the file's used pages come first.
    """
    moved = (int.from_bytes(value[:8], "big") + 1000).to_bytes(8, "big") + value[8:]
    path = os.path.join(index_dir, "data.mdb")
    with open(path, "r+b") as f:
        head = f.read(16 * MIB)
        at = head.find(key + value)
        assert at >= 0, f"the run {key.hex()} -> {value.hex()} is not in the first 16 MiB of {path}"
        while at >= 0:
            f.seek(at + len(key))
            f.write(moved)
            at = head.find(key + value, at + 1)


def move_first_stream_run(data_dir):
    """
    Damages a stopped single-shard store: the run of the shard's first stream (the lowest stream id)
    names events past the log's end, so reads of that stream fail. Returns the runs the index has.
    """
    index_dir = os.path.join(data_dir, "shard-000", "index")
    entries = stream_index_entries(index_dir)
    assert entries, f"no stream_index entries in {index_dir}"
    point_run_elsewhere(index_dir, *entries[0])
    return len(entries)


def damage_stored_data(data_dir, data):
    """
    Makes an event of a stopped single-shard store undecodable in the log file itself: its data
    field (`data`, 128 to 16383 bytes, unique in the log) claims 16383 bytes, more than the event
    has. Every copy of its page is patched, as LMDB copies pages on write.
    """
    assert 128 <= len(data) < 16383, len(data)
    field = bytes([5 << 3 | 2, len(data) & 0x7f | 0x80, len(data) >> 7])  # data = 5, bytes
    path = os.path.join(data_dir, "shard-000", "data.mdb")
    with open(path, "r+b") as f:
        log = f.read()
        at = log.find(field + data)
        assert at >= 0, f"the event's data is not in {path}"
        while at >= 0:
            f.seek(at + 1)
            f.write(b"\xff\x7f")
            at = log.find(field + data, at + 1)


def failing_sends_env(flag=None, after_responses=None):
    """
    A server environment with fail_sends.c preloaded: its HTTP/2 sends fail while the file `flag`
    exists, or once it has submitted `after_responses` responses.
    """
    shim = os.environ.get("EVF_FAIL_SENDS_LIB")
    if not shim or not os.path.isfile(shim):
        pytest.fail(f"EVF_FAIL_SENDS_LIB={shim!r}: give the path of libevf_fail_sends.so (ctest sets it)",
                    pytrace=False)
    env = {"LD_PRELOAD": shim,
           # the preloaded library comes before ASan's runtime in the list of libraries
           "ASAN_OPTIONS": f"{os.environ.get('ASAN_OPTIONS', '')}:verify_asan_link_order=0".lstrip(":")}
    if flag is not None:
        env["EVF_FAIL_SENDS"] = str(flag)
    if after_responses is not None:
        env["EVF_FAIL_SENDS_AFTER_RESPONSES"] = str(after_responses)
    return env


def failing_alloc_env(flag, every):
    """
    A server environment with fail_alloc.c preloaded: one allocation in `every` fails while the
    file `flag` exists.
    """
    shim = os.environ.get("EVF_FAIL_ALLOC_LIB")
    if not shim or not os.path.isfile(shim):
        pytest.fail(f"EVF_FAIL_ALLOC_LIB={shim!r}: give the path of libevf_fail_alloc.so (ctest sets it)",
                    pytrace=False)
    return {"LD_PRELOAD": shim, "EVF_FAIL_ALLOC": str(flag), "EVF_FAIL_ALLOC_EVERY": str(every),
            # the preloaded library comes before ASan's runtime in the list of libraries
            "ASAN_OPTIONS": f"{os.environ.get('ASAN_OPTIONS', '')}:verify_asan_link_order=0".lstrip(":")}


def read_stream_all(stub, stream, timeout=RPC_TIMEOUT):
    """Every event of a stream, paging with limit 0 until an empty page."""
    out = []
    while True:
        page = read_stream(stub, stream, version=len(out), timeout=timeout)
        if not page:
            return out
        out.extend(page)


def read_global(stub, offset=0, limit=0, timeout=RPC_TIMEOUT):
    pb = load_stubs()[0]
    return stub.GetGlobalStream(pb.GetGlobalStreamRequest(offset=offset, limit=limit), timeout=timeout)


def wait_global(stub, position, timeout=15.0):
    """Polls (bounded) until the global stream shows the event at position; returns it."""
    def visible():
        events = read_global(stub, position - 1, 1).events
        return events[0] if events and events[0].position == position else None
    return poll(visible, timeout=timeout, what=f"global position {position} to be visible")


def read_global_all(stub, offset=0, limit=0, expect_at_least=0, timeout=15.0):
    """
    Pages the global stream from offset until an empty page, and (bounded)
    until at least expect_at_least events were seen: the global stream may lag
    acknowledged appends by about one commit. Checks the page invariants on
    the way (ascending positions, checkpoint = last position or offset).
    """
    out = []
    cp = offset
    deadline = time.monotonic() + timeout
    while True:
        resp = read_global(stub, cp, limit)
        events = list(resp.events)
        if limit:
            assert len(events) <= limit
        if events:
            positions = [e.position for e in events]
            assert positions[0] > cp, f"page from {cp} starts at {positions[0]}"
            assert positions == sorted(set(positions)), f"positions not strictly ascending: {positions[:20]}"
            assert resp.checkpoint == positions[-1]
            out.extend(events)
            cp = resp.checkpoint
            continue
        assert resp.checkpoint == cp, f"empty page from {cp} has checkpoint {resp.checkpoint}"
        if len(out) >= expect_at_least:
            return out
        if time.monotonic() >= deadline:
            raise AssertionError(f"global stream from {offset}: {len(out)} events after {timeout} s, "
                                 f"want at least {expect_at_least}")
        time.sleep(0.02)


def event_count(stub):
    return stub.EventCount(load_stubs()[0].EventCountRequest(), timeout=RPC_TIMEOUT).count


def stream_count(stub):
    return stub.StreamCount(load_stubs()[0].StreamCountRequest(), timeout=RPC_TIMEOUT).count


def list_streams(stub, skip=0, limit=0):
    pb = load_stubs()[0]
    return list(stub.ListStreams(pb.ListStreamsRequest(skip=skip, limit=limit), timeout=RPC_TIMEOUT).streams)


def list_streams_all(stub, page=0):
    out = []
    while True:
        names = list_streams(stub, skip=len(out), limit=page)
        if not names:
            return out
        out.extend(names)


def server_version(stub, timeout=RPC_TIMEOUT):
    return stub.Version(load_stubs()[0].VersionRequest(), timeout=timeout).version


# --------------------------------------------------------------------------
# A bare HTTP/2 client for traffic no real gRPC client would send
# --------------------------------------------------------------------------

class RawResponse:
    def __init__(self):
        self.headers = {}
        self.trailers = {}
        self.data = bytearray()
        self.ended = False
        self.reset_code = None

    @property
    def done(self):
        return self.ended or self.reset_code is not None

    def _field(self, name):
        if name in self.trailers:
            return self.trailers[name]
        return self.headers.get(name)  # a trailers-only response

    @property
    def grpc_status(self):
        v = self._field("grpc-status")
        return None if v is None else int(v)

    @property
    def grpc_message(self):
        return self._field("grpc-message") or ""

    @property
    def http_status(self):
        v = self.headers.get(":status")
        return None if v is None else int(v)

    def messages(self):
        """The gRPC messages in the response body (each: flag, length, bytes)."""
        out, buf = [], bytes(self.data)
        while buf:
            assert len(buf) >= 5, f"truncated gRPC prefix in response: {buf!r}"
            flag, length = buf[0], int.from_bytes(buf[1:5], "big")
            assert flag == 0, "compressed response message"
            assert len(buf) >= 5 + length, "truncated gRPC message in response"
            out.append(buf[5:5 + length])
            buf = buf[5 + length:]
        return out

    def __repr__(self):
        return (f"RawResponse(headers={self.headers}, trailers={self.trailers}, "
                f"data={len(self.data)} bytes, ended={self.ended}, reset={self.reset_code})")


class RawH2:
    """
    An HTTP/2 client connection (python3-h2) over a plain socket, for gRPC
    requests that are malformed on purpose, incomplete, or abandoned.
    """

    def __init__(self, port, host=HOST, timeout=10.0):
        import h2.config
        import h2.connection
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.responses = {}
        self.closed = False  # the server closed the TCP connection
        self.goaway = None  # error code of a GOAWAY from the server
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def abort(self):
        """Closes the socket with a TCP reset (SO_LINGER 0), no goodbye."""
        import struct
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(self, path, end_stream=False, extra=(), content_type="application/grpc",
                grpc_timeout=None):
        """Opens a stream with request HEADERS (grpc_timeout: a grpc-timeout value, "200m"); returns its id."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", "POST"), (":scheme", "http"), (":path", path),
                (":authority", f"{self.host}:{self.port}"),
                ("content-type", content_type), ("te", "trailers")]
        if grpc_timeout is not None:
            hdrs.append(("grpc-timeout", grpc_timeout))
        hdrs += list(extra)
        self.responses[sid] = RawResponse()
        self.conn.send_headers(sid, hdrs, end_stream=end_stream)
        self.flush()
        return sid

    def data(self, sid, payload, end_stream=False, timeout=10.0):
        """Sends DATA on a stream, within flow control (waits, bounded, for window updates)."""
        payload = bytes(payload)
        deadline = time.monotonic() + timeout
        while payload:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                if time.monotonic() >= deadline:
                    raise TimeoutError("no flow-control window from the server")
                self._receive_once(deadline)
                continue
            chunk, payload = payload[:window], payload[window:]
            self.conn.send_data(sid, chunk, end_stream=end_stream and not payload)
            self.flush()
        if end_stream and not payload and not self._ended_sent(sid):
            self.conn.end_stream(sid)
            self.flush()

    def request(self, method, path, body=None, extra=(), end_stream=True):
        """Opens a plain HTTP/2 request (h2c API, not gRPC) with an optional body; returns its id."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":path", path),
                (":authority", f"{self.host}:{self.port}")] + list(extra)
        self.responses[sid] = RawResponse()
        self.conn.send_headers(sid, hdrs, end_stream=end_stream and not body)
        self.flush()
        if body:
            self.data(sid, body, end_stream=end_stream)
        return sid

    def _ended_sent(self, sid):
        import h2.stream
        stream = self.conn.streams.get(sid)
        if stream is None:
            return True
        return stream.state_machine.state in (h2.stream.StreamState.HALF_CLOSED_LOCAL,
                                              h2.stream.StreamState.CLOSED)

    def call(self, path, message=b"", timeout=10.0, **kw):
        """A complete unary call: HEADERS, one framed message, END_STREAM; returns the response."""
        sid = self.headers(path, **kw)
        self.data(sid, grpc_frame(message), end_stream=True)
        return self.response(sid, timeout=timeout)

    def response(self, sid, timeout=10.0):
        """Reads until the stream ends or is reset (or the connection closes); bounded."""
        r = self.responses[sid]
        deadline = time.monotonic() + timeout
        while not r.done and not self.closed:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no complete response on stream {sid} within {timeout} s: {r!r}")
            self._receive_once(deadline)
        return r

    def wait_closed(self, timeout=10.0):
        """True once the server closed the connection (FIN or reset) within timeout."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._receive_once(deadline)
        return self.closed

    def read_unacknowledged(self, deadline):
        """Reads what the server sent, giving no flow-control window back for its DATA."""
        self._receive_once(deadline, acknowledge=False)

    def _receive_once(self, deadline, acknowledge=True):
        import h2.events
        import h2.exceptions
        self.sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        except OSError:
            self.closed = True
            return
        if not chunk:
            self.closed = True
            return
        try:
            events = self.conn.receive_data(chunk)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return
        for ev in events:
            sid = getattr(ev, "stream_id", None)
            r = self.responses.get(sid) if sid else None
            if isinstance(ev, h2.events.ResponseReceived) and r is not None:
                r.headers.update(dict(ev.headers))
            elif isinstance(ev, h2.events.TrailersReceived) and r is not None:
                r.trailers.update(dict(ev.headers))
            elif isinstance(ev, h2.events.DataReceived):
                if r is not None:
                    r.data += ev.data
                if ev.flow_controlled_length and acknowledge:
                    with contextlib.suppress(Exception):
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and r is not None:
                r.ended = True
            elif isinstance(ev, h2.events.StreamReset) and r is not None:
                r.reset_code = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
        with contextlib.suppress(OSError):
            self.flush()


def read_until_closed(sock, timeout=10.0):
    """Reads a plain socket until the peer closes it; returns (closed, bytes read)."""
    deadline = time.monotonic() + timeout
    got = bytearray()
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return True, bytes(got)
        if not chunk:
            return True, bytes(got)
        got += chunk
    return False, bytes(got)


# --------------------------------------------------------------------------
# The HTTP/JSON API (HTTP_PORT) and the metrics endpoint (PROM_PORT)
# --------------------------------------------------------------------------

API = "/api/v1"
HTTP_TIMEOUT = 30.0  # seconds for one HTTP exchange (generous for ASan)


def quote_name(name):
    """A stream name as one path segment: every reserved byte percent-encoded (/ as %2F)."""
    return urllib.parse.quote(name, safe="")


def stream_path(name, **query):
    """/api/v1/stream/<name percent-encoded>[?query]."""
    path = f"{API}/stream/{quote_name(name)}"
    if query:
        path += "?" + urllib.parse.urlencode(query)
    return path


def b64(data):
    """Standard base64 with padding, as the server writes bytes."""
    return base64.b64encode(bytes(data)).decode()


def unb64(text):
    return base64.b64decode(text, validate=True)


def json_body(obj, ascii_only=True):
    return json.dumps(obj, ensure_ascii=ascii_only).encode()


class HttpResult:
    """One HTTP response: status, headers (a list of (name, value)), body bytes, version text."""

    def __init__(self, status, headers, body, version="1.1", reason=""):
        self.status = status
        self.headers = [(str(k), str(v)) for k, v in headers]
        self.body = bytes(body)
        self.version = version
        self.reason = reason

    def header(self, name, default=None):
        """A header's value (case-insensitive; several occurrences joined with ", ")."""
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(vals) if vals else default

    @property
    def content_type(self):
        return (self.header("content-type") or "").lower()

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"response body is not JSON ({e}): {self!r}") from None

    def __repr__(self):
        body = self.body[:400] + (b"..." if len(self.body) > 400 else b"")
        return f"HttpResult(HTTP/{self.version} {self.status}, headers={self.headers}, body={body!r})"


def http_request(port, method, path, body=None, headers=None, conn=None, timeout=HTTP_TIMEOUT):
    """
    One request with Python's http.client (HTTP/1.1). body: bytes, str, a dict/list
    (sent as JSON), or an iterator of bytes (sent chunked). conn: an open
    HTTPConnection to reuse (keep-alive); otherwise a fresh one, closed after.
    """
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json_body(body)
    if body is not None and not any(k.lower() == "content-type" for k in hdrs):
        hdrs["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        version = {10: "1.0", 11: "1.1"}.get(resp.version, str(resp.version))
        return HttpResult(resp.status, resp.getheaders(), data, version, resp.reason)
    finally:
        if own:
            conn.close()


def http_get(server, path, **kw):
    return http_request(server.http_port, "GET", path, **kw)


def http_post(server, path, body, **kw):
    return http_request(server.http_port, "POST", path, body=body, **kw)


def expect_ok(r):
    """Asserts a 200 with content-type application/json; returns the parsed body."""
    assert r.status == 200, f"expected 200, got {r!r}"
    assert r.content_type.startswith("application/json"), f"content-type of a success: {r!r}"
    return r.json()


def expect_error(r, status, code):
    """Asserts an error response: status, and a JSON body {"error": text, "code": code}; returns the text."""
    assert r.status == status, f"expected {status} {code}, got {r!r}"
    body = r.json()
    assert isinstance(body, dict), f"error body is not a JSON object: {r!r}"
    assert body.get("code") == code, f"expected code {code!r}: {r!r}"
    assert isinstance(body.get("error"), str) and body["error"], f"error body needs a message: {r!r}"
    return body["error"]


def http_append(server, stream, events, version=None, conn=None, extra=None):
    """
    POST /api/v1/stream/{stream}; events: a list of dicts (data/metadata given as
    bytes are base64-encoded); extra: more top-level fields of the body.
    """
    evs = []
    for e in events:
        e = dict(e)
        for k in ("data", "metadata"):
            if isinstance(e.get(k), (bytes, bytearray)):
                e[k] = b64(e[k])
        evs.append(e)
    body = {"events": evs}
    if version is not None:
        body["version"] = version
    body.update(extra or {})
    return http_request(server.http_port, "POST", stream_path(stream), body=body, conn=conn)


def http_read_stream(server, stream, conn=None, **query):
    return expect_ok(http_request(server.http_port, "GET", stream_path(stream, **query), conn=conn))["events"]


def http_read_global(server, offset=0, limit=None, conn=None):
    q = {"offset": offset}
    if limit is not None:
        q["limit"] = limit
    path = f"{API}/stream/all?" + urllib.parse.urlencode(q)
    return expect_ok(http_request(server.http_port, "GET", path, conn=conn))


def wait_http_ready(server, timeout=READY_TIMEOUT):
    """Polls GET /healthz on the HTTP port (bounded) until it answers 200."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if not server.alive():
            pytest.fail(f"{server.name} exited with {describe_exit(server.proc.returncode)}:\n"
                        f"{server.stderr_tail()}", pytrace=False)
        try:
            r = http_request(server.http_port, "GET", "/healthz", timeout=2.0)
            if r.status == 200:
                return server
            last = r
        except (OSError, http.client.HTTPException) as e:
            last = e
        if time.monotonic() >= deadline:
            pytest.fail(f"{server.name}: GET /healthz on HTTP_PORT={server.http_port} did not answer "
                        f"200 within {timeout:.0f} s (last: {last!r})", pytrace=False)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def http_server(server):
    """The module server, once its HTTP port answers GET /healthz."""
    return wait_http_ready(server)


class KeepAlive:
    """One http.client connection that must stay the same TCP connection for every request."""

    def __init__(self, port, timeout=HTTP_TIMEOUT):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self.conn.sock
        self.local = self.sock.getsockname()
        self.count = 0

    def request(self, method, path, body=None, headers=None):
        assert self.conn.sock is self.sock, \
            f"the connection was closed after request {self.count} (http.client would reconnect)"
        r = http_request(self.conn.port, method, path, body=body, headers=headers, conn=self.conn)
        self.count += 1
        assert self.conn.sock is self.sock and self.sock.fileno() != -1, \
            f"the server closed the connection after request {self.count}: {r!r}"
        assert (r.header("connection") or "").lower() != "close", \
            f"response {self.count} says Connection: close: {r!r}"
        return r

    def get(self, path):
        return self.request("GET", path)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def http_connect(port, timeout=10.0):
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request_bytes(method, path, body=b"", headers=(), host="localhost"):
    """An HTTP/1.1 request as bytes; Content-Length added when body is not empty and not given."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    names = {k.lower() for k, _ in headers}
    lines += [f"{k}: {v}" for k, v in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    if body and "content-type" not in names:
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + bytes(body)


def chunked(*parts):
    """A chunked transfer coding of the given byte strings (then the last chunk)."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return out + b"0\r\n\r\n"


class Http1Reader:
    """Reads HTTP/1.1 responses off a raw socket, one at a time, in order."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.closed = False

    def _more(self, deadline):
        """Reads once. False when the peer closed; TimeoutError past deadline."""
        if self.closed:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete HTTP response in time; buffered: {bytes(self.buf[:300])!r}")
        self.sock.settimeout(max(0.01, min(left, 0.5)))
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return True
        except OSError:
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def _line(self, start, deadline):
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                return i
            if not self._more(deadline):
                return -1

    def read_response(self, timeout=10.0, head_only=False):
        """The next final response, or None when the connection closed before a whole one."""
        deadline = time.monotonic() + timeout
        while True:
            end = self.buf.find(b"\r\n\r\n")
            while end < 0:
                if not self._more(deadline):
                    return None
                end = self.buf.find(b"\r\n\r\n")
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            assert len(parts) >= 2 and parts[0].startswith("HTTP/"), f"bad status line {lines[0]!r}"
            status = int(parts[1])
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
            pos = end + 4
            if 100 <= status < 200:
                del self.buf[:pos]
                continue
            lower = {k.lower(): v for k, v in headers}
            if head_only or status in (204, 304):
                body = b""
            elif "chunked" in lower.get("transfer-encoding", "").lower():
                body = bytearray()
                while True:
                    i = self._line(pos, deadline)
                    if i < 0:
                        return None
                    size = int(bytes(self.buf[pos:i]).split(b";")[0].strip(), 16)
                    pos = i + 2
                    if size == 0:
                        while True:  # trailers up to an empty line
                            i = self._line(pos, deadline)
                            if i < 0:
                                return None
                            empty = i == pos
                            pos = i + 2
                            if empty:
                                break
                        break
                    while len(self.buf) < pos + size + 2:
                        if not self._more(deadline):
                            return None
                    body += self.buf[pos:pos + size]
                    pos += size + 2
                body = bytes(body)
            elif "content-length" in lower:
                n = int(lower["content-length"])
                while len(self.buf) < pos + n:
                    if not self._more(deadline):
                        return None
                body = bytes(self.buf[pos:pos + n])
                pos += n
            else:
                while self._more(deadline):
                    pass
                body = bytes(self.buf[pos:])
                pos = len(self.buf)
            del self.buf[:pos]
            return HttpResult(status, headers, body, parts[0][5:], parts[2] if len(parts) > 2 else "")

    def wait_closed(self, timeout=10.0):
        """True once the peer closed the connection within timeout (data read meanwhile is kept)."""
        deadline = time.monotonic() + timeout
        try:
            while self._more(deadline):
                pass
        except TimeoutError:
            return False
        return True


def send_then_read(port, head, body=b"", chunk=64 * 1024, timeout=20.0):
    """
    Sends a request (head, then body in chunks) on a new raw connection, stopping
    the upload as soon as the server answers or stops reading or closes (a server
    may answer an oversized request early), then reads the response. Returns
    (response or None, reader).
    """
    import select
    sock = http_connect(port)
    reader = Http1Reader(sock)
    sock.sendall(head)
    deadline = time.monotonic() + timeout
    sent = 0
    while sent < len(body) and time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        sock.settimeout(2.0)
        try:
            sock.sendall(body[sent:sent + chunk])
        except (socket.timeout, OSError):
            break
        sent += chunk
    return reader.read_response(timeout=max(1.0, deadline - time.monotonic())), reader


def connection_refused(port):
    """True when nothing accepts connections on port any more."""
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _proc_net_tcp_rx_queue(local_port, remote):
    """rx_queue of the TCP socket local_port <- remote (host, port) in /proc/net/tcp[6], or None."""
    want_remote_port = remote[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    lport = int(parts[1].rsplit(":", 1)[1], 16)
                    rport = int(parts[2].rsplit(":", 1)[1], 16)
                    if lport == local_port and rport == want_remote_port:
                        return int(parts[4].split(":")[1], 16)
        except OSError:
            continue
    return None


def wait_server_read(sock, server_port, timeout=10.0):
    """
    Polls (bounded) until the server side of sock has no unread bytes (its
    receive queue in /proc/net/tcp is empty): what we sent has been read by
    the server, with no sleep as a guess.
    """
    me = sock.getsockname()
    poll(lambda: _proc_net_tcp_rx_queue(server_port, me) == 0, timeout=timeout, interval=0.005,
         what=f"the server to read what {me} sent")


# -- curl (Debian's curl 7.88: HTTP/1.1, and h2c with --http2-prior-knowledge) -------------

def curl(url, method=None, data=None, headers=(), http2=False, timeout=20.0, extra=()):
    """Runs curl once; returns an HttpResult (version "1.1" or "2")."""
    with tempfile.TemporaryDirectory(prefix="evf-curl-") as tmp:
        hdr, out = os.path.join(tmp, "headers"), os.path.join(tmp, "body")
        cmd = ["curl", "-sS", "--max-time", str(timeout), "-D", hdr, "-o", out,
               "-w", "%{http_code} %{http_version}", "-H", "Expect:",
               "--http2-prior-knowledge" if http2 else "--http1.1"]
        if method:
            cmd += ["-X", method]
        for h in headers:
            cmd += ["-H", h]
        if data is not None:
            infile = os.path.join(tmp, "in")
            with open(infile, "wb") as f:
                f.write(json_body(data) if isinstance(data, (dict, list)) else bytes(data))
            cmd += ["--data-binary", "@" + infile]
            if not any(h.lower().startswith("content-type:") for h in headers):
                cmd += ["-H", "Content-Type: application/json"]
        cmd += list(extra) + [url]
        res = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
        assert res.returncode == 0, f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.decode()}"
        code, version = res.stdout.decode().split()
        with open(hdr, "rb") as f:
            blocks = [b for b in f.read().decode("latin-1").split("\r\n\r\n") if b.strip()]
        headers_out = []
        for line in blocks[-1].split("\r\n")[1:] if blocks else []:
            name, _, value = line.partition(":")
            headers_out.append((name.strip(), value.strip()))
        with open(out, "rb") as f:
            body = f.read() if os.path.exists(out) else b""
        return HttpResult(int(code), headers_out, body, version)


def curl_many(urls, http2=False, timeout=30.0):
    """
    One curl run over several URLs (sequential, one connection when it can be
    reused): [(status, new connections)]. Not for h2c: Debian's curl 7.88.1
    fails to reuse a --http2-prior-knowledge connection ("Error in the HTTP2
    framing layer", curl issue #10634, fixed in 8.0.0).
    """
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-w", "%{http_code} %{num_connects}\\n",
           "--http2-prior-knowledge" if http2 else "--http1.1"]
    for u in urls:
        cmd += [u, "-o", "/dev/null"]
    res = subprocess.run(cmd, capture_output=True, timeout=timeout + 10)
    assert res.returncode == 0, f"curl exited {res.returncode}: {res.stderr.decode()}"
    return [tuple(int(x) for x in line.split()) for line in res.stdout.decode().splitlines() if line.strip()]


# -- Prometheus text format -------------------------------------------------------------------

class Metrics:
    """A parsed Prometheus text exposition: samples [(name, labels dict, value)], TYPE and HELP lines."""

    _NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

    def __init__(self, text):
        self.text = text
        self.samples = []
        self.types = {}
        self.helps = {}
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip() if len(parts) > 3 else ""
                elif len(parts) >= 3 and parts[1] == "HELP":
                    self.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
                continue
            self.samples.append(self._sample(line, n))

    def _sample(self, line, n):
        m = self._NAME.match(line)
        assert m, f"metrics line {n}: no metric name: {line!r}"
        name, i, labels = m.group(0), m.end(), {}
        if i < len(line) and line[i] == "{":
            i += 1
            while True:
                while line[i] in " ,":
                    i += 1
                if line[i] == "}":
                    i += 1
                    break
                lm = self._NAME.match(line, i)
                assert lm and line[lm.end()] == "=" and line[lm.end() + 1] == '"', f"metrics line {n}: {line!r}"
                key, i = lm.group(0), lm.end() + 2
                val = []
                while line[i] != '"':
                    if line[i] == "\\":
                        i += 1
                        val.append({"n": "\n", "\\": "\\", '"': '"'}.get(line[i], "\\" + line[i]))
                    else:
                        val.append(line[i])
                    i += 1
                labels[key] = "".join(val)
                i += 1
        rest = line[i:].split()
        assert rest, f"metrics line {n}: no value: {line!r}"
        return name, labels, float(rest[0])

    def find(self, name, **labels):
        """Samples named name whose labels include the given ones: [(labels, value)]."""
        return [(lab, v) for nm, lab, v in self.samples
                if nm == name and all(lab.get(k) == str(val) for k, val in labels.items())]

    def value(self, name, **labels):
        """The sum of the matching samples' values (0 when none)."""
        return sum(v for _, v in self.find(name, **labels))

    def one(self, name, **labels):
        found = self.find(name, **labels)
        assert len(found) == 1, f"want exactly one sample {name}{labels}, got {found}"
        return found[0][1]

    def has(self, name, **labels):
        return bool(self.find(name, **labels))


def scrape(server, timeout=HTTP_TIMEOUT):
    """GET /metrics on PROM_PORT: (HttpResult, Metrics)."""
    r = http_request(server.prom_port, "GET", "/metrics", timeout=timeout)
    assert r.status == 200, f"GET /metrics: {r!r}"
    return r, Metrics(r.body.decode())


def metric(server, name, **labels):
    return scrape(server)[1].value(name, **labels)


def wait_prom_ready(server, timeout=READY_TIMEOUT):
    """Polls GET /metrics on PROM_PORT (bounded) until it answers 200."""
    def ok():
        try:
            return http_request(server.prom_port, "GET", "/metrics", timeout=2.0).status == 200
        except (OSError, http.client.HTTPException):
            return False
    poll(ok, timeout=timeout, interval=0.05, what=f"GET /metrics on PROM_PORT={server.prom_port}")
    return server


# --------------------------------------------------------------------------
# Failure reports carry the server's log
# --------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._evf_started = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    since = getattr(item, "_evf_started", 0.0)
    for s in _SERVERS:
        if s.proc is None:
            continue
        if s.alive():
            state = "running"
        elif s.stopped_at is None:
            state = f"DIED on its own, exit code {describe_exit(s.proc.returncode)}"
        elif s.stopped_at >= since:
            state = f"stopped, exit code {describe_exit(s.last_returncode)}"
        else:
            continue
        rep.sections.append((f"{s.name} stderr ({state})", s.stderr_tail(400)))


def raw_messages(resp):
    """The complete gRPC messages received so far on a RawH2 stream (a partial last one is left out)."""
    out, buf = [], bytes(resp.data)
    while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[1:5], "big"):
        n = int.from_bytes(buf[1:5], "big")
        out.append(buf[5:5 + n])
        buf = buf[5 + n:]
    return out


def raw_frames_until_closed(raw, timeout):
    """
    Every HTTP/2 frame the server sends until it closes the connection, parsed here:
    python-h2 refuses frames that follow a GOAWAY (its connection state machine goes
    to CLOSED), although RFC 9113 section 6.8 lets streams up to the GOAWAY's last
    stream id go on. Returns [(type, flags, stream id, payload)] in order.
    """
    buf = bytearray(getattr(getattr(raw.conn, "incoming_buffer", None), "data", b""))  # what h2 holds
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the server did not close the connection within {timeout:.0f} s")
        raw.sock.settimeout(min(left, 0.5))
        try:
            chunk = raw.sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    frames = []
    while len(buf) >= 9:
        n = int.from_bytes(buf[0:3], "big")
        if len(buf) < 9 + n:
            break
        frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, bytes(buf[9:9 + n])))
        del buf[:9 + n]
    return frames


def header_block(raw, frames, i):
    """The decoded header list of the HEADERS frame frames[i] (with its CONTINUATIONs)."""
    ftype, flags, sid, payload = frames[i]
    if flags & 0x8:  # PADDED
        payload = payload[1:len(payload) - payload[0]]
    if flags & 0x20:  # PRIORITY
        payload = payload[5:]
    block = bytearray(payload)
    j = i
    while not frames[j][1] & 0x4:  # END_HEADERS
        j += 1
        block += frames[j][3]
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.conn.decoder.decode(bytes(block))}
