"""A loopback HTTP proxy that injects S3 faults in front of the moto server.

    with FaultProxy(upstream="http://127.0.0.1:5000") as proxy:
        proxy.add(Fault("status", status=503, times=2))            # the first 2 requests get a 503
        proxy.add(Fault("drop", method="PUT", path="manifest.json")) # every PUT of a manifest: connection closed
        env["AWS_ENDPOINT_URL"] = proxy.url

Faults: `status` answers with an S3-style error and that HTTP status; `drop` reads the request and
closes the connection with no answer; `hang` reads the request and answers nothing until the client
gives up and closes the connection (its read timeout: a slow store), and never forwards it; `delay`
waits `seconds` before forwarding; `stall` reads the headers and half of the body, sets `stalled`,
and never forwards (the test kills the client meanwhile: an upload cut off halfway). A fault
passes the first `skip` matching requests through, then applies to the next `times` of them, or to
all of them when `times` is None.
Every request is recorded in `requests` as (method, path, what happened). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    kind: str  # status | drop | hang | delay | stall
    method: str | None = None  # only requests with this method; None = any
    path: str | None = None  # only requests whose path (before '?') ends with this; None = any
    times: int | None = 1  # how many matching requests get the fault; None = all of them
    status: int = 503  # for status
    seconds: float = 0.0  # for delay
    skip: int = 0  # matching requests passed through untouched before the fault applies

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or method == self.method) and (self.path is None or path.split("?")[0].endswith(self.path))


class FaultProxy:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []
        self.stalled = threading.Event()
        self.release = threading.Event()  # set on stop: stalled handlers give up
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()
        self.stalled.clear()

    def pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path) and (fault.times is None or fault.times > 0):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def record(self, method: str, path: str, what: str) -> None:
        with self._lock:
            self.requests.append((method, path, what))

    def count(self, what: str | None = None, method: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, p, w in self.requests if (what is None or w == what) and (method is None or m == method)
                       and (path is None or p.split("?")[0].endswith(path)))

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

        def log_message(self, *args) -> None:  # quiet
            pass

        def _read_body(self, limit: int | None = None) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length if limit is None else min(limit, length))

        def _until_client_leaves(self) -> bool:
            """Answer nothing until the client closes the connection (True), or the proxy stops or 60 s pass."""
            self.connection.settimeout(0.2)
            deadline = time.time() + 60
            gone = False
            while time.time() < deadline and not proxy.release.is_set():
                try:
                    if not self.connection.recv(65536, socket.MSG_PEEK):
                        gone = True  # the client is gone
                        break
                    self.rfile.read1(65536)
                except socket.timeout:
                    continue
                except OSError:
                    gone = True
                    break
            self.connection.settimeout(None)
            self.close_connection = True
            return gone

        def _handle(self) -> None:
            method, path = self.command, self.path
            fault = proxy.pick(method, path)
            if fault is not None and fault.kind == "stall":
                self._read_body(limit=int(self.headers.get("Content-Length") or 0) // 2)
                proxy.record(method, path, "stall")
                proxy.stalled.set()
                self._until_client_leaves()
                return
            body = self._read_body()
            if fault is not None and fault.kind == "hang":
                if self._until_client_leaves():
                    proxy.record(method, path, "hang")  # the client gave up on it
                    return
                proxy.record(method, path, "hang, then answered")  # it never did: forward after all
                self.close_connection = False
            if fault is not None and fault.kind == "drop":
                proxy.record(method, path, "drop")
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault is not None and fault.kind == "status":
                proxy.record(method, path, f"status {fault.status}")
                payload = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{_code(fault.status)}</Code>"
                           f"<Message>injected by the test proxy</Message></Error>").encode()
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(payload)
                return
            if fault is not None and fault.kind == "delay":
                proxy.record(method, path, "delay")
                time.sleep(fault.seconds)
            elif fault is None or fault.kind != "hang":
                proxy.record(method, path, "forward")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or method in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                try:
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", resp.getheader("Content-Length", "0") if method == "HEAD" else str(len(data)))
                    self.end_headers()
                    if method != "HEAD":
                        self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # the client gave up (its read timeout)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    return Handler


def _code(status: int) -> str:
    return {500: "InternalError", 503: "SlowDown", 502: "BadGateway", 504: "GatewayTimeout"}.get(status, str(status))
