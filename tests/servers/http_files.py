"""An HTTP/1.1 file server on 127.0.0.1 (port 0) with byte ranges, ETags and If-Range, as real
file hosts have them, plus the misbehaviours the hostile-input tests need: a connection that
breaks or stalls mid-body, a body that never ends, a required API token, a redirect to another host.

Large files are sent with sendfile(2), so the server is not what limits a benchmark.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Served:
    data: bytes | Path
    # Headers a request must carry (else 401), e.g. {"Authorization": "Bearer …"}.
    required_headers: dict[str, str] = field(default_factory=dict)
    methods: tuple[str, ...] = ("GET",)
    # The first `break_times` answers send this many bytes of the body, then close the connection.
    break_after: int | None = None
    break_times: int = 1
    # After a broken answer, serve this instead (the file changed on the server meanwhile).
    changed_to: bytes | None = None
    # Every answer sends this many bytes, then stalls until the server stops.
    stall_after: int | None = None
    # Answer 302 to this URL instead.
    redirect_to: str | None = None
    # Sleep between 64 KiB pieces (to see fetches overlap).
    delay_seconds: float = 0.0
    ranges: bool = True
    # Transfer-Encoding: chunked, no Content-Length: the size is not announced.
    chunked: bool = False
    # A chunked body that never ends (zeros, until the client goes away or the server closes).
    endless: bool = False

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else self.data.stat().st_size

    @property
    def etag(self) -> str:
        if isinstance(self.data, bytes):
            return '"' + hashlib.sha256(self.data).hexdigest()[:32] + '"'
        info = self.data.stat()
        return f'"{info.st_size:x}-{info.st_mtime_ns:x}"'


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class FileServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """On host:port (port 0: one the kernel picks); another host than 127.0.0.1 is for a test's
        own network namespace (tests/servers/public_network.py)."""
        self.host = host
        self.files: dict[str, Served] = {}
        self.seen: list[Seen] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_HEAD(self) -> None:
                server._handle(self, "HEAD")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def add(self, path: str, data: bytes | Path, **behaviour: object) -> str:
        self.files[path] = Served(data, **behaviour)  # type: ignore[arg-type]
        return self.url(path)

    def requests_for(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    # --- serving ---------------------------------------------------------------------------------

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.seen.append(Seen(method, path, dict(handler.headers.items())))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            served = self.files.get(path)
            breaking = False
            if served is not None and served.break_after is not None and served.break_times > 0:
                served.break_times -= 1
                breaking = True
        try:
            self._answer(handler, method, served, breaking)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self._lock:
                self.active -= 1

    def _answer(
        self, handler: http.server.BaseHTTPRequestHandler, method: str, served: Served | None, breaking: bool
    ) -> None:
        if served is None:
            handler.send_error(404)
            return
        if served.redirect_to:
            handler.send_response(302)
            handler.send_header("Location", served.redirect_to)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if method not in (*served.methods, "HEAD"):
            handler.send_error(405)
            return
        for name, value in served.required_headers.items():
            if handler.headers.get(name) != value:
                handler.send_error(401, "a valid token is required")
                return
        size = served.size
        start, end = 0, size
        status = 200
        wanted = handler.headers.get("Range")
        if_range = handler.headers.get("If-Range")
        match = _RANGE.fullmatch(wanted or "")
        if served.ranges and match and (if_range is None or if_range == served.etag):
            start = int(match.group(1))
            end = min(size, int(match.group(2)) + 1) if match.group(2) else size
            if start >= size:
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{size}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            status = 206
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        if served.chunked or served.endless:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(end - start))
        handler.send_header("ETag", served.etag)
        if served.ranges:
            handler.send_header("Accept-Ranges", "bytes")
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        handler.end_headers()
        if method == "HEAD":
            return
        limit = end
        if breaking:
            limit = min(end, start + int(served.break_after or 0))
        elif served.stall_after is not None:
            limit = min(end, start + served.stall_after)
        self._send(handler, served, start, limit)
        if breaking:
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            if served.changed_to is not None:
                served.data = served.changed_to
        elif served.stall_after is not None and limit < end:
            handler.wfile.flush()
            self._release.wait(120)
            handler.close_connection = True

    def _send(
        self, handler: http.server.BaseHTTPRequestHandler, served: Served, start: int, end: int
    ) -> None:
        if served.endless:
            piece = bytes(65536)
            while not self._release.is_set():
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            return
        if served.chunked:
            data = served.data if isinstance(served.data, bytes) else served.data.read_bytes()
            for position in range(start, end, 65536):
                piece = data[position : min(end, position + 65536)]
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            handler.wfile.write(b"0\r\n\r\n")
            return
        if isinstance(served.data, bytes):
            position = start
            while position < end:
                piece = served.data[position : min(end, position + 65536)]
                handler.wfile.write(piece)
                position += len(piece)
                if served.delay_seconds:
                    handler.wfile.flush()
                    self._release.wait(served.delay_seconds)
            return
        handler.wfile.flush()
        with served.data.open("rb") as source:
            sent = start
            while sent < end:
                count = handler.connection.sendfile(source, sent, end - sent)
                if not count:
                    break
                sent += count


def free_port() -> int:
    """A port nothing listens on (closed again at once): connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


__all__ = ["FileServer", "Served", "free_port"]


def serve_files_forever(paths: list[str]) -> None:
    """`python -m tests.servers.http_files FILE…`: serves each file at /<its name>, prints each URL
    on a line, and serves until killed (benchmarks run the server as a process of its own)."""
    import time
    from pathlib import Path

    server = FileServer()
    for path in paths:
        print(server.add("/" + Path(path).name, Path(path)), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    import sys

    serve_files_forever(sys.argv[1:])
