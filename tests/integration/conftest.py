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
import contextlib
import importlib
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

    def _receive_once(self, deadline):
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
                if ev.flow_controlled_length:
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
