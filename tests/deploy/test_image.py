#!/usr/bin/python3
"""
Image test: builds the container image from the repository's Dockerfile with
podman, and runs it for real.

  1. Makes the base image localhost/debian:bookworm-slim with debootstrap
     unless it exists (tests/deploy/make-base-image; no registry is reachable
     here), then `podman build` (the build stage compiles and runs the unit
     tests; podman's layer cache makes a rebuild of unchanged layers free).
  2. Checks the image's configuration: non-root numeric user, DATA=/data,
     VOLUME /data, the three ports, SIGTERM, a HEALTHCHECK, no build tools.
  3. Starts it on a new named volume (--network host, free ports through
     GRPC_PORT/HTTP_PORT/PROM_PORT), times start-to-ready (/readyz 200),
     appends and reads over gRPC (Debian's python3-grpcio, stubs generated
     from proto/ at test time) and over HTTP (curl), runs the HEALTHCHECK.
  4. Stops it with SIGTERM (podman stop -t 10): exit code 0, in under 10 s.
  5. Starts a new container on the same volume, locked down as in Kubernetes
     (read-only root, no capabilities, no privilege escalation), reads the
     same events back over both APIs and appends again.
Containers and the volume are removed whatever happens.

Exits 77 (ctest's SKIP_RETURN_CODE) when podman, debootstrap, curl or the
Python gRPC packages are missing: scripts/install-deploy-deps installs them.

Environment (set by tests/deploy/CMakeLists.txt):
  PROJECT_DIR   the source tree (build context)
  WORK_DIR      a folder of the build tree for this test's files
  EVF_IMAGE     the tag to build (default localhost/eventflowdb:ctest)
"""

import base64
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.abspath(os.environ.get("PROJECT_DIR") or os.path.join(HERE, "..", ".."))
WORK_DIR = os.path.abspath(os.environ.get("WORK_DIR") or tempfile.mkdtemp(prefix="evf-image-"))
IMAGE = os.environ.get("EVF_IMAGE", "localhost/eventflowdb:ctest")
BUILD_IMAGE = IMAGE.rsplit(":", 1)[0] + "-build:" + IMAGE.rsplit(":", 1)[1]
UID = "10001"
READY_TIMEOUT = 30.0
STOP_LIMIT = 10.0  # seconds: podman stop -t 10 would SIGKILL past this

RESULTS = {}


def log(msg):
    print(f"test_image: {msg}", flush=True)


def fail(msg):
    log(f"FAILED: {msg}")
    raise SystemExit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def skip_unless_tools():
    missing = [t for t in ("podman", "debootstrap", "curl") if shutil.which(t) is None]
    for mod in ("grpc", "grpc_tools.protoc"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(f"python module {mod} ({sys.executable})")
    if os.geteuid() != 0:
        missing.append("root (podman build of this image is set up for rootful podman)")
    if missing:
        log(f"SKIPPED: missing {', '.join(missing)} (run scripts/install-deploy-deps)")
        raise SystemExit(SKIP)


def podman_env():
    """podman settings that work on these machines (runc, cgroupfs, ulimits crun cannot set)."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env:
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard = 1048576 if hard == resource.RLIM_INFINITY else hard
        conf = os.path.join(WORK_DIR, "containers.conf")
        with open(conf, "w") as f:
            f.write("[containers]\n"
                    f'default_ulimits = ["nofile={hard}:{hard}", "nproc=4096:4096"]\n'
                    "[engine]\n"
                    'runtime = "runc"\n'
                    'cgroup_manager = "cgroupfs"\n')
        env["CONTAINERS_CONF"] = conf
    return env


ENV = None


def run(*args, check_rc=True, timeout=120, quiet=False):
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=ENV)
    if check_rc and res.returncode != 0:
        fail(f"{' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def podman(*args, **kw):
    return run("podman", *args, **kw)


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

def load_stubs():
    out = os.path.join(WORK_DIR, "stubs")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    proto_dir = os.path.join(PROJECT_DIR, "proto")
    res = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir,
                          f"--python_out={out}", f"--grpc_python_out={out}",
                          "api.proto", "health.proto"], capture_output=True, text=True)
    check(res.returncode == 0, f"protoc failed:\n{res.stderr}")
    sys.path.insert(0, out)
    mods = [importlib.import_module(m) for m in ("api_pb2", "api_pb2_grpc", "health_pb2", "health_pb2_grpc")]
    sys.path.remove(out)
    return mods


def curl(method, url, body=None):
    """(status, body text) of one HTTP request with curl."""
    args = ["curl", "-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]
    if body is not None:
        args += ["-H", "content-type: application/json", "--data-binary", json.dumps(body)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        return 0, res.stderr
    text, _, code = res.stdout.rpartition("\n")
    return int(code), text


def free_ports(n):
    ports, socks = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------

def build_image():
    t0 = time.monotonic()
    res = subprocess.run([os.path.join(HERE, "make-base-image")], env=ENV, text=True,
                         capture_output=True, timeout=900)
    check(res.returncode == 0, f"make-base-image failed:\n{res.stdout}\n{res.stderr}")
    RESULTS["base image (s)"] = round(time.monotonic() - t0, 1)

    # The build stage is tagged too (BUILD_IMAGE), so that pruning the
    # untagged leftovers of earlier runs keeps its cached layers: its apt
    # layer is reused and only the source layers are rebuilt.
    t0 = time.monotonic()
    logfile = os.path.join(WORK_DIR, "build.log")
    with open(logfile, "w") as f:
        for extra in (["--target", "build", "-t", BUILD_IMAGE], ["-t", IMAGE]):
            rc = subprocess.run(["podman", "build", "--pull=never", "--network", "host",
                                 "--format", "docker", "--layers", *extra,
                                 "-f", os.path.join(PROJECT_DIR, "Dockerfile"), PROJECT_DIR],
                                stdout=f, stderr=subprocess.STDOUT, env=ENV, timeout=1800).returncode
            if rc != 0:
                break
    RESULTS["image build (s)"] = round(time.monotonic() - t0, 1)
    if rc != 0:
        with open(logfile) as f:
            sys.stdout.write(f.read()[-8000:])
        fail(f"podman build exited {rc} (log: {logfile})")
    podman("image", "prune", "-f", check_rc=False)


def check_image_config():
    info = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    cfg = info["Config"]
    size = int(info["Size"])
    RESULTS["image size (bytes)"] = size
    RESULTS["image size (MB)"] = round(size / 1e6, 1)
    user = cfg.get("User", "")
    check(user.split(":")[0] == UID, f"image user is {user!r}, want numeric non-root {UID}")
    check("DATA=/data" in cfg.get("Env", []), f"DATA=/data not in {cfg.get('Env')}")
    check(list(cfg.get("Volumes") or {}) == ["/data"], f"volumes {cfg.get('Volumes')}")
    check(sorted(cfg.get("ExposedPorts") or {}) == ["16543/tcp", "26543/tcp", "6543/tcp"],
          f"exposed ports {cfg.get('ExposedPorts')}")
    check(cfg.get("StopSignal") == "SIGTERM", f"stop signal {cfg.get('StopSignal')}")
    hc = info.get("Healthcheck") or info.get("HealthCheck") or cfg.get("Healthcheck")
    check(hc and "/healthz" in " ".join(hc.get("Test", [])), f"no /healthz HEALTHCHECK: {hc}")
    check(cfg.get("Entrypoint") == ["/usr/local/bin/eventflowdb"], f"entrypoint {cfg.get('Entrypoint')}")
    # Nothing of the build in the runtime stage.
    res = podman("run", "--rm", "--network", "none", "--entrypoint", "/bin/bash", IMAGE, "-c",
                 "for t in gcc cc cmake ninja protoc-c curl python3; do command -v $t; done;"
                 " ls /src 2>/dev/null; true")
    check(res.stdout.strip() == "", f"runtime image holds build tools or sources: {res.stdout!r}")


# As locked down as the Kubernetes pod and the compose service: read-only
# root file system (no tmpfs either), no capabilities, no privilege escalation.
LOCKED_DOWN = ["--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges"]


def start(name, volume, ports, extra=()):
    grpc_port, http_port, prom_port = ports
    t0 = time.monotonic()
    podman("run", "-d", "--name", name, "--network", "host", "-v", f"{volume}:/data", *extra,
           # The test runs the HEALTHCHECK itself; podman's timer needs systemd.
           "--health-interval", "disable",
           "-e", f"GRPC_PORT={grpc_port}", "-e", f"HTTP_PORT={http_port}",
           "-e", f"PROM_PORT={prom_port}", "-e", "SHARDS=2", IMAGE)
    deadline = t0 + READY_TIMEOUT
    while True:
        code, _ = curl("GET", f"http://127.0.0.1:{http_port}/readyz")
        if code == 200:
            return time.monotonic() - t0
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        if not state.get("Running"):
            fail(f"{name} exited ({state.get('ExitCode')}) before ready:\n"
                 + podman("logs", name, check_rc=False).stderr)
        if time.monotonic() > deadline:
            fail(f"{name} not ready after {READY_TIMEOUT} s:\n" + podman("logs", name, check_rc=False).stderr)
        time.sleep(0.02)


def stop(name):
    t0 = time.monotonic()
    podman("stop", "-t", str(int(STOP_LIMIT)), name, timeout=60)
    elapsed = time.monotonic() - t0
    state = json.loads(podman("inspect", name).stdout)[0]["State"]
    logs = podman("logs", name).stderr
    check(state["ExitCode"] == 0, f"{name} exited {state['ExitCode']} after SIGTERM:\n{logs}")
    check(elapsed < STOP_LIMIT - 0.5, f"{name} took {elapsed:.1f} s to stop")
    lines = [ln for ln in logs.splitlines() if ln.strip()]
    for ln in lines:
        try:
            json.loads(ln)
        except ValueError:
            fail(f"{name}: a log line is not JSON: {ln!r}")
    check(any(json.loads(ln).get("msg") == "stopped" for ln in lines), f"{name}: no 'stopped' log line:\n{logs}")
    return elapsed


def exercise(ports, mods):
    """Appends over gRPC and HTTP, reads back over both; returns what was stored."""
    pb, pb_grpc, hpb, hpb_grpc = mods
    import grpc
    grpc_port, http_port, prom_port = ports
    H = f"http://127.0.0.1:{http_port}"
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        health = hpb_grpc.HealthStub(ch)
        for service in ("", "api.EventStore"):
            st = health.Check(hpb.HealthCheckRequest(service=service), timeout=10).status
            check(st == hpb.HealthCheckResponse.SERVING, f"health({service!r}) = {st}")
        store = pb_grpc.EventStoreStub(ch)
        ok = store.AppendToStream(pb.AppendToStreamRequest(
            stream="account-42", version=0,
            events=[pb.EventData(type="Opened", data=b'{"owner":"ada"}'),
                    pb.EventData(type="Deposited", data=b'{"amount":10}')]), timeout=10)
        check(ok.first_version == 0 and len(ok.events) == 2, f"gRPC append: {ok}")

    data = base64.b64encode(b'{"amount":5}').decode()
    code, text = curl("POST", f"{H}/api/v1/stream/account-7",
                      {"version": 0, "events": [{"type": "Withdrawn", "data": data}]})
    check(code == 200, f"HTTP append: {code} {text}")
    http_id = json.loads(text)["events"][0]

    # Cross-read: the gRPC append over HTTP, the HTTP append over gRPC.
    code, text = curl("GET", f"{H}/api/v1/stream/account-42?version=0&limit=100")
    check(code == 200, f"HTTP read: {code} {text}")
    got = [(e["type"], base64.b64decode(e["data"])) for e in json.loads(text)["events"]]
    check(got == [("Opened", b'{"owner":"ada"}'), ("Deposited", b'{"amount":10}')], f"HTTP read: {got}")
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        store = pb_grpc.EventStoreStub(ch)
        evs = store.GetStream(pb.GetStreamRequest(stream="account-7"), timeout=10).events
        check([(e.id, e.type, e.data) for e in evs] == [(http_id, "Withdrawn", b'{"amount":5}')],
              f"gRPC read of the HTTP append: {evs}")
    code, text = curl("GET", f"http://127.0.0.1:{prom_port}/metrics")
    check(code == 200 and "eventflowdb_events_appended_total" in text, f"metrics: {code}")
    return snapshot(ports, mods)


def snapshot(ports, mods):
    """Every stored event, as (id, stream, version, type, data, position), over gRPC, checked against HTTP."""
    pb, pb_grpc, _, _ = mods
    import grpc
    with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as ch:
        page = pb_grpc.EventStoreStub(ch).GetGlobalStream(pb.GetGlobalStreamRequest(offset=0), timeout=10)
    over_grpc = [(e.id, e.stream, e.version, e.type, e.data, e.position) for e in page.events]
    code, text = curl("GET", f"http://127.0.0.1:{ports[1]}/api/v1/stream/all?offset=0&limit=1000")
    check(code == 200, f"HTTP global read: {code} {text}")
    over_http = [(e["id"], e["stream"], e["version"], e["type"], base64.b64decode(e.get("data", "")),
                  e["position"]) for e in json.loads(text)["events"]]
    check(over_grpc == over_http, f"global stream differs:\ngRPC {over_grpc}\nHTTP {over_http}")
    return over_grpc


def remove_leftovers():
    """Containers and volumes of a run that ctest killed at its timeout."""
    for cid in podman("ps", "-a", "-q", "--filter", "name=^evf-ctest-", check_rc=False).stdout.split():
        podman("rm", "-f", "-v", "-t", "0", cid, check_rc=False)
    for vol in podman("volume", "ls", "-q", "--filter", "name=^evf-ctest-", check_rc=False).stdout.split():
        podman("volume", "rm", "-f", vol, check_rc=False)


def main():
    global ENV
    skip_unless_tools()
    os.makedirs(WORK_DIR, exist_ok=True)
    ENV = podman_env()
    mods = load_stubs()
    suffix = uuid.uuid4().hex[:8]
    volume = f"evf-ctest-{suffix}"
    names = [f"evf-ctest-{suffix}-1", f"evf-ctest-{suffix}-2"]
    t_all = time.monotonic()
    remove_leftovers()
    try:
        build_image()
        check_image_config()
        podman("volume", "create", volume)

        ports = free_ports(3)
        RESULTS["start-to-ready, new volume (s)"] = round(start(names[0], volume, ports), 3)
        res = podman("exec", names[0], "id", "-u")
        check(res.stdout.strip() == UID, f"server runs as uid {res.stdout.strip()}")
        res = podman("healthcheck", "run", names[0], check_rc=False)
        check(res.returncode == 0, f"HEALTHCHECK failed: {res.stdout} {res.stderr}")
        written = exercise(ports, mods)
        check(len(written) == 3, f"stored {len(written)} events, want 3")
        RESULTS["SIGTERM to exit 0 (s)"] = round(stop(names[0]), 3)

        # The second container runs locked down (LOCKED_DOWN), as in Kubernetes.
        ports = free_ports(3)
        RESULTS["start-to-ready, existing volume (s)"] = round(
            start(names[1], volume, ports, LOCKED_DOWN), 3)
        check(snapshot(ports, mods) == written, "the second container reads other events")
        res = podman("healthcheck", "run", names[1], check_rc=False)
        check(res.returncode == 0, f"HEALTHCHECK failed (read-only): {res.stdout} {res.stderr}")
        code, text = curl("POST", f"http://127.0.0.1:{ports[1]}/api/v1/stream/account-42",
                          {"version": 2, "events": [{"type": "Closed"}]})
        check(code == 200, f"append after the restart: {code} {text}")
        RESULTS["SIGTERM to exit 0, second (s)"] = round(stop(names[1]), 3)
    finally:
        for n in names:
            podman("rm", "-f", "-v", "-t", "0", n, check_rc=False)
        podman("volume", "rm", "-f", volume, check_rc=False)
    RESULTS["whole test (s)"] = round(time.monotonic() - t_all, 1)
    for k, v in RESULTS.items():
        log(f"{k}: {v}")
    with open(os.path.join(WORK_DIR, "results.json"), "w") as f:
        json.dump(RESULTS, f, indent=2)
    log("passed")


if __name__ == "__main__":
    main()
