"""A TCP server on 127.0.0.1 (port 0) that accepts every connection, reads whatever it is sent and
never answers: an S3 (or any HTTP) endpoint that has stalled. A client without a limit of its own
waits on it for ever, so only the caller's deadline can end the wait."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class SilentServer:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # Connections accepted so far: a test can tell that its client did reach the server.
        self.accepted = 0
        threading.Thread(target=self._accept, name="silent-server", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._connections.append(connection)
                self.accepted += 1
            threading.Thread(target=self._swallow, args=(connection,), daemon=True).start()

    @staticmethod
    def _swallow(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while connection.recv(65536):
                pass

    def close(self) -> None:
        """Refuses new connections and resets the open ones (their clients fail at once). Idempotent."""
        self._closed.set()
        with contextlib.suppress(OSError):
            # Wakes the blocked accept(): closing alone would leave the kernel's socket listening.
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()


@contextlib.contextmanager
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
