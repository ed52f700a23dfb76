"""The real server (uvicorn, `service.server.serve`) on a loopback port with the fake embedder: slow clients,
body limits on the wire, overload, recovery, and SIGTERM. Bounded in time; no assertion on wall-clock speed
(socket timeouts only bound how long a test waits before it fails)."""

import select
import signal
import socket
import threading
import time

import httpx
import pytest

from tests.servers import Server


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def request(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{headers}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@pytest.fixture(scope="module")
def server(fake_index, tmp_path_factory):
    srv = Server(fake_index, tmp_path_factory.mktemp("srv") / "server.log", REPORTQA_HEADERS_TIMEOUT_S="1",
                 REPORTQA_BODY_TIMEOUT_S="1", REPORTQA_MAX_CONCURRENCY="1", REPORTQA_MAX_QUEUE="1",
                 REPORTQA_QUEUE_TIMEOUT_S="5", FAKE_ENCODE_DELAY_S="0.3")
    yield srv
    srv.stop()


def test_slow_headers_are_dropped(server):
    s = server.connect(timeout=15)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # …and never the blank line
    for _ in range(2):
        time.sleep(0.4)
        s.sendall(b"X-Slow: 1\r\n")  # a header line now and then does not keep it open
    assert read_until_closed(s) == b""  # closed by the server, no response
    idle = server.connect(timeout=15)  # a connection that sends nothing at all is closed too
    assert read_until_closed(idle) == b""


def test_slow_body_is_a_408_and_the_connection_is_closed(server):
    s = server.connect(timeout=15)
    s.sendall(request("POST", "/v1/search", b"").replace(b"\r\n\r\n", b"\r\nContent-Length: 40\r\n\r\n") + b'{"q')
    time.sleep(0.5)
    s.sendall(b"u")  # trickling
    reply = read_until_closed(s)
    assert reply.startswith(b"HTTP/1.1 408") and b"connection: close" in reply.lower()


def test_oversized_bodies_on_the_wire(server):
    s = server.connect()
    s.sendall(b"POST /v1/ask HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000000\r\n\r\n{\"question\": \"")
    reply = read_until_closed(s)  # refused on the header alone: nothing more was sent
    assert reply.startswith(b"HTTP/1.1 413")
    s = server.connect()
    s.sendall(b"POST /v1/ask HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    sent, reply = 0, b""
    while sent < 8 * 2**20 and not reply:  # up to 8 MB in 8 KiB chunks, until the server answers
        try:
            s.sendall(b"2000\r\n" + b"[" * 0x2000 + b"\r\n")
            sent += 0x2000
        except OSError:
            break  # closed by the server after its answer
        if select.select([s], [], [], 0.002)[0]:  # a client that listens while it sends
            reply = s.recv(65536)
    if not reply:
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:60]
    assert sent < 2**20  # answered once 64 KiB had been read, long before the 8 MB were sent


def test_a_bad_request_does_not_break_keep_alive(server):
    s = server.connect()
    s.sendall(request("POST", "/v1/search", b'{"query": "kata \\ud800", "mode": "lexical"}'))
    s.sendall(request("GET", "/healthz"))  # pipelined on the same connection
    data = b""
    while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b'{"status":"ok"}'):
        data += s.recv(65536)
    assert data.startswith(b"HTTP/1.1 422") and b"HTTP/1.1 200" in data


def test_burst_gets_only_200_or_503_healthz_answers_and_the_service_recovers(server):
    codes: list[int] = []
    retry_after: list[str] = []

    def search(i: int) -> None:
        r = httpx.post(f"{server.base}/v1/search", json={"query": f"burst {i} q{i}x", "k": 2}, timeout=30)
        codes.append(r.status_code)
        if r.status_code == 503:
            retry_after.append(r.headers.get("retry-after", ""))

    threads = [threading.Thread(target=search, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    health = []
    for _ in range(5):  # the limiter is full (1 in flight, 1 queued, 0.3 s each) while these run
        health.append(httpx.get(f"{server.base}/healthz", timeout=5).status_code)
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0, codes
    assert all(ra.isdigit() and int(ra) >= 1 for ra in retry_after)
    assert health == [200] * 5
    r = httpx.post(f"{server.base}/v1/search", json={"query": "after the burst", "k": 2}, timeout=10)
    assert r.status_code == 200  # recovered
    m = httpx.get(f"{server.base}/metrics", timeout=5).text
    assert 'reportqa_refusals_total{reason="overload"}' in m and 'status="503"' in m


def test_sigterm_under_load_with_a_slow_client(fake_index, tmp_path):
    srv = Server(fake_index, tmp_path / "server.log", REPORTQA_BODY_TIMEOUT_S="2", REPORTQA_MAX_CONCURRENCY="2",
                 REPORTQA_MAX_QUEUE="4", REPORTQA_QUEUE_TIMEOUT_S="10", REPORTQA_GRACEFUL_SHUTDOWN_S="10",
                 FAKE_ENCODE_DELAY_S="1.0")
    try:
        slow = srv.connect()
        slow.sendall(request("POST", "/v1/search").replace(b"\r\n\r\n", b"\r\nContent-Length: 40\r\n\r\n") + b"{")
        idle = srv.connect()
        idle.sendall(b"GET /healthz HTTP/1.1\r\n")  # partial headers
        busy = []
        for i in range(4):  # in flight: 2 encoding, 2 queued, 1 s each
            s = srv.connect()
            s.sendall(request("POST", "/v1/search", f'{{"query": "term {i} z{i}q", "k": 1}}'.encode(),
                              "Connection: close\r\n"))
            busy.append(s)
        deadline = time.time() + 10
        while time.time() < deadline:  # every request is in the service before the signal
            m = httpx.get(f"{srv.base}/metrics", timeout=5).text
            if "reportqa_search_in_flight 2.0" in m and "reportqa_search_queued 2.0" in m:
                break
            time.sleep(0.05)
        srv.proc.send_signal(signal.SIGTERM)
        replies = [read_until_closed(s) for s in busy]
        assert all(r.startswith(b"HTTP/1.1 200") for r in replies), [r[:40] for r in replies]
        with pytest.raises(OSError):  # no new connections once shutting down
            for _ in range(20):
                srv.connect(timeout=2).close()
                time.sleep(0.1)
        assert srv.proc.wait(timeout=20) == 0  # the slow client is cut by its body deadline, not waited for
        assert read_until_closed(slow).startswith(b"HTTP/1.1 408") and read_until_closed(idle) == b""
    finally:
        srv.stop()


def test_writes_of_one_loop_iteration_leave_in_one_send():
    """A response's headers and body, written separately by uvicorn in one event-loop iteration, reach the
    socket as one write (so a replica killed mid-response leaves the balancer all of it or nothing); close()
    sends what is pending first; abort() drops it."""
    import asyncio

    from service.server import CoalescingTransport

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, bytes]] = []
            self.closing = False

        def write(self, data: bytes) -> None:
            self.calls.append(("write", data))

        def close(self) -> None:
            self.calls.append(("close", b""))
            self.closing = True

        def abort(self) -> None:
            self.calls.append(("abort", b""))

        def is_closing(self) -> bool:
            return self.closing

        def get_write_buffer_size(self) -> int:
            return 0

        def get_extra_info(self, name: str, default=None):
            return ("127.0.0.1", 1) if name == "peername" else default

    async def main() -> None:
        loop = asyncio.get_running_loop()
        raw = Recorder()
        t = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"{}")
        assert raw.calls == [] and t.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await asyncio.sleep(0)
        assert raw.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")]
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # everything else is the real transport's
        raw.calls.clear()
        t.write(b"last words")
        t.close()
        assert raw.calls == [("write", b"last words"), ("close", b"")]
        await asyncio.sleep(0)
        assert raw.calls == [("write", b"last words"), ("close", b"")]  # nothing written after close
        raw2 = Recorder()
        t2 = CoalescingTransport(raw2, loop)  # type: ignore[arg-type]
        t2.write(b"dropped")
        t2.abort()
        await asyncio.sleep(0)
        assert raw2.calls == [("abort", b"")]

    asyncio.run(main())
