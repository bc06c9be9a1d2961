"""
Allocation failures inside the real server binary (fail_alloc.c preloaded:
one allocation in N fails, on every thread, while a flag file exists).

A connection the server has no memory for is closed at once, and the
server goes on taking connections once allocations succeed again.
"""

import socket

from conftest import HOST, failing_alloc_env, http_request, load_stubs, read_until_closed

CALL_TIMEOUT = 20.0  # seconds


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
