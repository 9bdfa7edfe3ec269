"""Fetching one input file to disk: streamed through four 1 MiB buffers (flat memory whatever the
size), its size and sha256 checked on the way, resumed where it stopped when a connection breaks
or stalls.

Sources: http(s):// (the publisher's method and headers; public hosts only unless the engine allows
private ones, redirects included; the headers never follow a redirect to another host),
s3://bucket/key (the suite's endpoint and credentials, see s3.py), ipfs://CID (a gateway, or
Kubo's RPC API `cat`, see ipfs.py), file:// (bound into the sandbox by the engine).

Every message that can reach the consumer names no location and no header: the publisher's
secrets stay with the publisher.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import socket
import threading
import time
from urllib.parse import urljoin

from podtools import httpio
from podtools.safepath import UnsafeName, create_file

CHUNK = 1024 * 1024
# Received and written in steps this big (see _copy).
STEP = 64 * 1024
ATTEMPTS = 3
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    pass


class _Retry(Exception):
    """A failure worth another attempt (a broken or stalled connection, a 5xx); its text is safe."""


class Options:
    """What every fetch of one job shares: its limits, and a flag that stops them all."""

    def __init__(
        self,
        public_only: bool = True,
        stall_seconds: float = 60.0,
        max_total_bytes: int = 0,
        resolver=None,
    ):
        self.public_only = public_only
        self.stall_seconds = stall_seconds
        self.max_total_bytes = max_total_bytes
        # How host names become addresses (hosts.Resolver); None: the system's (getaddrinfo).
        self.resolver = resolver
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._total = 0

    def take(self, size: int) -> None:
        if self.cancel.is_set():
            raise FetchError("cancelled: another input failed")
        if not self.max_total_bytes:
            return
        with self._lock:
            self._total += size
            over = self._total > self.max_total_bytes
        if over:
            raise FetchError(inputs_too_large(self.max_total_bytes))


def inputs_too_large(limit: int) -> str:
    # The engine sends one number (the smaller of the two limits), so both are named.
    return (
        f"the inputs exceed {limit} bytes, the most this job may fetch: its environment's disk "
        "(or this engine's C2D_MAX_INPUT_BYTES, if smaller)"
    )


class Body:
    """A response being read: `start` is the offset of its first byte (0 when the server sends the
    whole content again), `total` the content's whole size when the server said it."""

    def __init__(self, start: int, total: int | None, readinto, close, step: int = STEP):
        self.start = start
        self.total = total
        self.readinto = readinto
        self.close = close
        # How much to ask readinto for at once.
        self.step = step


# --- sources ------------------------------------------------------------------------------------------


class HttpSource:
    def __init__(
        self,
        url: str,
        options: Options,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        public_only: bool = True,
    ):
        self.url = url
        self.method = (method or "GET").upper()
        if self.method not in ("GET", "POST"):
            raise FetchError(f"HTTP method {self.method[:10]!r} is not supported (GET or POST)")
        self.headers = dict(headers or {})
        self.options = options
        self.public_only = public_only
        # The first answer's ETag (or Last-Modified): a resumed request asks for the rest only if
        # the content is still the same (If-Range), otherwise gets it whole again.
        self.validator: str | None = None

    def open(self, offset: int) -> Body:
        url, method = self.url, self.method
        first_origin = httpio.origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            addresses = None
            if self.public_only:
                from podtools import hosts

                # Every hop (a public URL must not bounce the fetch to a private host) is resolved
                # once and connected to at the addresses checked, never looked up again.
                addresses = hosts.check_public(url, self.options.resolver or hosts.system_resolver)
            # The publisher's headers (an API token, say) go to the publisher's host only.
            headers = dict(self.headers) if httpio.origin(url) == first_origin else {}
            if offset:
                headers["Range"] = f"bytes={offset}-"
                if self.validator:
                    headers["If-Range"] = self.validator
            response = httpio.request(
                method, url, headers, timeout=self.options.stall_seconds, addresses=addresses
            )
            status = response.status
            if status in _REDIRECTS:
                target = response.getheader("Location")
                response.close()
                if not target:
                    raise FetchError(f"the server answered HTTP {status} without a Location")
                url = urljoin(url, target)
                if status == 303 or (status in (301, 302) and method == "POST"):
                    method = "GET"
                continue
            if status in (200, 206):
                return self._body(response, offset)
            response.close()
            if status == 416 and offset:
                return self._restart()
            if status >= 500 or status == 429:
                raise _Retry(f"the server answered HTTP {status}")
            raise FetchError(f"the server answered HTTP {status} {response.reason[:60]}".rstrip())
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")

    def _restart(self) -> Body:
        self.validator = None
        return self.open(0)

    def _body(self, response, offset: int) -> Body:
        start, total = 0, _int(response.getheader("Content-Length"))
        if response.status == 206:
            parsed = _content_range(response.getheader("Content-Range"))
            if parsed is None or parsed[0] != offset:
                response.close()
                return self._restart()
            start, total = parsed
        if self.validator is None:
            etag = response.getheader("ETag")
            self.validator = (
                etag if etag and not etag.startswith("W/") else response.getheader("Last-Modified")
            )
        return Body(start, total, response.readinto, response.close)


class IpfsApiSource:
    """`cat` through Kubo's HTTP RPC API (POST, as Kubo requires), resumed with its offset."""

    def __init__(self, api: str, path: str, options: Options, timeout: float):
        self.api = api.rstrip("/")
        self.path = path
        self.options = options
        self.timeout = timeout

    def open(self, offset: int) -> Body:
        from urllib.parse import quote

        # Without a timeout, js-ipfs and Kubo wait for ever for a CID they cannot find.
        url = (
            f"{self.api}/api/v0/cat?arg={quote(self.path, safe='/')}&offset={offset}"
            f"&timeout={int(self.timeout)}s"
        )
        response = httpio.request("POST", url, timeout=max(self.options.stall_seconds, self.timeout + 5))
        if response.status != 200:
            message = _ipfs_message(response.read(4096)).replace(self.path, "<location>")
            response.close()
            if response.status >= 502:
                raise _Retry(f"the IPFS node answered HTTP {response.status}")
            raise FetchError(f"the IPFS node could not read the content: {message}")
        return Body(offset, None, response.readinto, response.close)


class S3Source:
    def __init__(self, url: str, options: Options):
        from podtools import s3

        self.bucket, self.key = s3.split(url)
        self.options = options
        self.etag: str | None = None

    def open(self, offset: int) -> Body:
        from podtools import s3

        arguments = {"Bucket": self.bucket, "Key": self.key}
        if offset:
            arguments["Range"] = f"bytes={offset}-"
        if self.etag:
            arguments["IfMatch"] = self.etag  # resumed only while the object is the same
        try:
            response = s3.client(self.options.stall_seconds, self.bucket).get_object(**arguments)
        except Exception as exc:
            raise _s3_failure(exc) from None
        self.etag = self.etag or response.get("ETag")
        total = _int(str(response.get("ContentLength", "")))
        content_range = _content_range(response.get("ContentRange"))
        if content_range is not None:
            total = content_range[1]
        elif offset:
            total = None
        stream = response["Body"]

        def readinto(view: memoryview) -> int:
            try:
                data = stream.read(len(view))
            except Exception as exc:
                raise _s3_failure(exc) from None
            view[: len(data)] = data
            return len(data)

        # botocore's reads cost more per call than a socket's: larger steps.
        return Body(offset, total, readinto, stream.close, step=CHUNK)


class FileSource:
    def __init__(self, path: str):
        self.path = path

    def open(self, offset: int) -> Body:
        handle = open(self.path, "rb")  # noqa: SIM115 (the Body closes it)
        handle.seek(offset)
        return Body(offset, os.fstat(handle.fileno()).st_size, handle.readinto, handle.close)


def source_for(location: dict, options: Options):
    url = location["url"]
    scheme = url.partition(":")[0].lower()
    if scheme in ("http", "https"):
        return HttpSource(
            url, options, location.get("method") or "GET", location.get("headers"), options.public_only
        )
    if scheme == "s3":
        return S3Source(url, options)
    if scheme == "ipfs":
        from podtools import ipfs

        path = url[len("ipfs://") :]
        gateway = ipfs.gateway_url()
        if gateway:
            from urllib.parse import quote

            return HttpSource(f"{gateway}/ipfs/{quote(path, safe='/')}", options, public_only=False)
        api = ipfs.api_url()
        if not api:
            raise FetchError("this engine has no IPFS gateway or API configured")
        return IpfsApiSource(api, path, options, ipfs.timeout_seconds())
    if scheme == "file":
        from urllib.parse import unquote, urlparse

        return FileSource(unquote(urlparse(url).path))
    raise FetchError(f"unsupported URL scheme {scheme[:20]!r}")


# --- the fetch ----------------------------------------------------------------------------------------


def fetch(location: dict, folder_fd: int, name: str, options: Options) -> tuple[int, str]:
    """Writes the content at location["url"] to the file `name` of the folder; answers (size,
    sha256, or "" when no checksum was declared: it is computed only to be checked). The file
    appears only once complete and checked (it is written as name.part)."""
    expected_size = int(location.get("size") or 0)
    expected_sha256 = str(location.get("sha256") or "").lower()
    part = name + ".part"
    try:
        source = source_for(location, options)
        fd = create_file(folder_fd, part)
    except UnsafeName as exc:
        raise FetchError(str(exc)) from None
    try:
        try:
            # Without a declared checksum there is nothing to check: hashing 1 GiB costs a CPU second.
            size, actual = _download(source, fd, expected_size, options, hashed=bool(expected_sha256))
        finally:
            os.close(fd)
        if expected_size and size != expected_size:
            raise FetchError(f"{size} bytes where {expected_size} were declared")
        if expected_sha256 and actual != expected_sha256:
            # The actual digest is not shown: it is a fingerprint of the publisher's private data.
            raise FetchError("content does not match the declared sha256")
        # link, not rename: it never replaces whatever has the name (a planted link included).
        os.link(part, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd, follow_symlinks=False)
    except FileExistsError:
        raise FetchError(f"{name!r} exists already") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part, dir_fd=folder_fd)
    return size, actual


class _Hasher:
    """sha256 in a thread of its own, a piece behind the download: hashing 1 GiB takes about as
    long as receiving and writing it, so done in turn they would take twice as long. A few fixed
    buffers go round (flat memory); pieces are hashed in the order they were read."""

    BUFFERS = 4

    def __init__(self, enabled: bool = True) -> None:
        """Not enabled (no checksum declared, nothing to check): the buffers only."""
        import queue

        self.digest = hashlib.sha256()
        self.enabled = enabled
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[mmap.mmap, int] | None] = queue.SimpleQueue()
        for _ in range(self.BUFFERS):
            # Anonymous pages, page-aligned like the page cache the data is copied to.
            self._free.put(mmap.mmap(-1, CHUNK))
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        if enabled:
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._full.get()
            if item is None:
                return
            buffer, count = item
            self.digest.update(memoryview(buffer)[:count])
            self._free.put(buffer)

    def buffer(self) -> mmap.mmap:
        return self._free.get()

    def give_back(self, buffer: mmap.mmap) -> None:
        self._free.put(buffer)

    def add(self, buffer: mmap.mmap, count: int) -> None:
        if self.enabled:
            self._full.put((buffer, count))
        else:
            self._free.put(buffer)

    def settle(self) -> None:
        """Waits until every piece handed over is hashed."""
        buffers = [self._free.get() for _ in range(self.BUFFERS)]
        for buffer in buffers:
            self._free.put(buffer)

    def restart(self) -> None:
        self.settle()
        self.digest = hashlib.sha256()

    def close(self) -> None:
        if self.enabled:
            self._full.put(None)
            self._thread.join()


def _download(source, fd: int, expected_size: int, options: Options, hashed: bool) -> tuple[int, str]:
    """(size, sha256 or "" when not hashed)."""
    hasher = _Hasher(hashed)
    try:
        size = _copy(source, fd, expected_size, options, hasher)
        hasher.settle()
        return size, hasher.digest.hexdigest() if hashed else ""
    finally:
        hasher.close()


def _copy(source, fd: int, expected_size: int, options: Options, hasher: _Hasher) -> int:
    size = 0
    failures = 0
    while True:
        opened = False
        try:
            body = source.open(size)
            opened = True
            try:
                if body.start != size:  # the server sends everything again: start over
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    size = 0
                    hasher.restart()
                if expected_size and body.total is not None and body.total > expected_size:
                    raise FetchError(
                        f"the server announces {body.total} bytes, more than the declared {expected_size}"
                    )
                ended = False
                while not ended:
                    # A buffer fills in 64 KiB steps, each written out at once (1 MiB writes ran
                    # slower and far more erratically here, in the kernel's copy to the page cache);
                    # the full buffer goes to the hasher.
                    buffer = hasher.buffer()
                    view = memoryview(buffer)
                    filled = 0
                    try:
                        while filled < CHUNK:
                            count = body.readinto(view[filled : filled + body.step])
                            if not count:
                                ended = True
                                break
                            if expected_size and size + count > expected_size:
                                raise FetchError(f"more than the declared {expected_size} bytes")
                            options.take(count)
                            piece = view[filled : filled + count]
                            while piece:
                                piece = piece[os.write(fd, piece) :]
                            filled += count
                            size += count
                    finally:
                        # What is on disk is hashed whatever happens next: a resumed fetch goes on from it.
                        if filled:
                            hasher.add(buffer, filled)
                        else:
                            hasher.give_back(buffer)
                if body.total is not None and size < body.total:
                    raise _Retry(f"the connection ended after {size} of {body.total} bytes")
                return size
            finally:
                body.close()
        except FetchError:
            raise
        except Exception as exc:
            reason = _transient(exc, opened, size, options)
            failures += 1
            if failures >= ATTEMPTS or options.cancel.is_set():
                raise FetchError(f"{reason}; gave up after {failures} attempts") from None
            time.sleep(0.25 * 2**failures)


def _transient(exc: Exception, opened: bool, size: int, options: Options) -> str:
    """Why an attempt failed, when another may succeed; raises FetchError when none can."""
    import http.client

    name = type(exc).__name__
    if isinstance(exc, _Retry):
        return str(exc)
    if name == "HostRefused" or isinstance(exc, httpio.BadUrl):
        raise FetchError(str(exc)) from None
    if isinstance(exc, socket.gaierror):
        raise FetchError("the host name does not resolve") from None
    if "SSL" in name or "Certificate" in name:
        raise FetchError(f"the TLS connection failed ({name})") from None
    if isinstance(exc, TimeoutError):
        if opened:
            return f"the server stopped sending after {size} bytes (nothing for {options.stall_seconds:g} s)"
        return f"the server did not answer within {options.stall_seconds:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "the server refused the connection"
    if isinstance(exc, http.client.IncompleteRead | ConnectionResetError | http.client.RemoteDisconnected):
        return f"the connection broke after {size} bytes"
    if isinstance(exc, OSError | http.client.HTTPException):
        return f"the connection failed ({name})"
    raise FetchError(f"the download failed ({name})") from None


def _s3_failure(exc: Exception) -> Exception:
    from podtools import s3

    text = s3.error_text(exc)
    if type(exc).__name__ in (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "IncompleteReadError",
        "ResponseStreamingError",
        "ProtocolError",
    ):
        return _Retry(text)
    return FetchError(text)


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def _content_range(raw: str | None) -> tuple[int, int | None] | None:
    """(first byte, whole size or None) of a Content-Range header such as "bytes 100-199/200"."""
    if not raw or not raw.startswith("bytes "):
        return None
    span, _, whole = raw[6:].partition("/")
    first = _int(span.partition("-")[0])
    if first is None:
        return None
    return first, _int(whole)


def _ipfs_message(raw: bytes) -> str:
    import json

    try:
        return str(json.loads(raw).get("Message", ""))[:200] or "no reason given"
    except ValueError:
        return raw[:200].decode(errors="replace")
