"""A loopback HTTP proxy in front of an S3 server (moto's) that misbehaves as object stores do
under load: at a set rate it answers ``503 SlowDown`` or ``500 InternalError``, or resets the
connection, instead of passing the request on. Counts what it injected.

    with FaultProxy("http://127.0.0.1:5000", rate=0.1, seed=1) as proxy:
        ... point KOALA_S3_ENDPOINT_URL at proxy.url ...
        proxy.counts  # {"requests": ..., "slowdown": ..., "error": ..., "reset": ...}
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "error": (500, "InternalError", "We encountered an internal error. Please try again."),
}
#: hop-by-hop headers a proxy must not pass on
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class FaultProxy:
    """Forward every request to ``upstream``, except a ``rate`` share that gets a fault (the
    three kinds in turn, drawn from a seeded generator)."""

    def __init__(self, upstream: str, rate: float, seed: int = 0) -> None:
        self.upstream = urlsplit(upstream)
        self.rate = rate
        self.counts: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def draw(self) -> str | None:
        """The fault for the next request, or None to pass it on."""
        with self._lock:
            self.counts["requests"] += 1
            if self._random.random() >= self.rate:
                return None
            kind = ("slowdown", "error", "reset")[self.counts["faults"] % 3]
            self.counts["faults"] += 1
            self.counts[kind] += 1
            return kind

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy.draw()
                if fault == "reset":
                    # RST instead of an answer: the client sees "connection reset by peer"
                    linger = struct.pack("ii", 1, 0)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault:
                    self._error(*_ERRORS[fault])
                    return
                self._forward(body)

            def _error(self, status: int, code: str, message: str) -> None:
                xml = (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                    f"<Message>{message}</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                self.wfile.write(xml)

            def _forward(self, body: bytes) -> None:
                up = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers.pop("Expect", None)
                try:
                    up.request(self.command, self.path, body=body or None, headers=headers)
                    answer = up.getresponse()
                    data = answer.read()
                finally:
                    up.close()
                head = self.command == "HEAD"  # its Content-Length is the object's size
                self.send_response(answer.status, answer.reason)
                for k, v in answer.getheaders():
                    if k.lower() not in _HOP and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler
