"""Reading published results for GetResult, streamed in chunks from an offset, wherever the engine
stored them: the local folder (file://), S3 (s3://, a ranged GET), IPFS (ipfs://CID, `cat` with an
offset through Kubo's RPC API, or a ranged GET on a gateway).

Only locations inside this provider's own result store are read: under its local root, under its
S3 bucket and prefix (C2D_RESULT_STORE), or plain CIDs through its IPFS node. A store that cannot
be reached or read (a disk error) answers UNAVAILABLE, so the client retries and resumes at the
offset it has; a file that is missing or that the provider may not read, FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

from c2d_common.errors import FailedPrecondition, Unavailable
from c2d_common.storage import StorageSettings, split_s3_location

CHUNK_BYTES = 1024 * 1024
READ_AHEAD = 4


class ResultStore:
    def __init__(self, root: Path, storage: StorageSettings | None = None):
        self.root = root.resolve()
        # None: from the environment (C2D_RESULT_STORE, C2D_S3_*, C2D_IPFS_*), as the engine reads it.
        self.storage = storage if storage is not None else StorageSettings.from_env()
        self._s3_client: Any = None

    async def read(self, location: str, offset: int) -> AsyncIterator[tuple[int, bytes]]:
        """(position, bytes) pieces of the file from offset to its end."""
        scheme = urlparse(location).scheme
        if scheme == "file":
            pieces = self._read_file(location, offset)
        elif scheme == "s3":
            pieces = self._read_s3(location, offset)
        elif scheme == "ipfs":
            pieces = self._read_ipfs(location, offset)
        else:
            raise FailedPrecondition(f"results stored at {scheme[:20]}:// cannot be read by this provider")
        async for piece in pieces:
            yield piece

    # --- local folder -----------------------------------------------------------------------------

    def _path(self, location: str) -> Path:
        path = Path(unquote(urlparse(location).path)).resolve()
        if not path.is_relative_to(self.root):
            raise FailedPrecondition("the result is stored outside this provider's result store")
        return path

    async def _read_file(self, location: str, offset: int) -> AsyncIterator[tuple[int, bytes]]:
        path = self._path(location)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            raise _file_error(exc) from None
        try:
            try:
                handle.seek(offset)
            except OSError as exc:
                raise _file_error(exc) from None
            async for piece in _pieces(handle.read, offset, _file_error):
                yield piece
        finally:
            handle.close()

    # --- S3 -----------------------------------------------------------------------------------------

    async def _read_s3(self, location: str, offset: int) -> AsyncIterator[tuple[int, bytes]]:
        store = self.storage.result_store
        if store.kind != "s3" or not store.holds(location):
            raise FailedPrecondition("the result is stored outside this provider's result store")
        # The key whole (not urlparse's path, which ends at "#" or "?"): podtools percent-encode
        # names in keys, and locations stored before they did hold names as they are.
        bucket, key = split_s3_location(location)
        if self._s3_client is None:
            self._s3_client = await asyncio.to_thread(self.storage.result_s3.client)
        arguments: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if offset:
            arguments["Range"] = f"bytes={offset}-"
        try:
            response = await asyncio.to_thread(self._s3_client.get_object, **arguments)
        except Exception as exc:
            code = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))
            if code == "InvalidRange":  # the offset is the file's end: nothing left to send
                return
            raise _s3_error(exc, code) from None
        body = response["Body"]
        try:
            async for piece in _pieces(body.read, offset, lambda exc: _s3_error(exc, "")):
                yield piece
        finally:
            body.close()

    # --- IPFS ---------------------------------------------------------------------------------------

    async def _read_ipfs(self, location: str, offset: int) -> AsyncIterator[tuple[int, bytes]]:
        parsed = urlparse(location)
        ipfs = self.storage.ipfs
        if not ipfs.readable:
            raise FailedPrecondition("the result is in IPFS, and this provider has no IPFS node configured")
        if parsed.path or not parsed.netloc.isalnum():
            raise FailedPrecondition("the result's IPFS location is not a plain CID")
        cid = parsed.netloc
        response = await asyncio.to_thread(
            _open_ipfs, ipfs.api_url, ipfs.gateway_url, cid, offset, ipfs.timeout_seconds
        )
        if response is None:  # the offset is the file's end
            return
        try:
            async for piece in _pieces(response.read, offset, _ipfs_error):
                yield piece
        finally:
            response.close()


# The name provider_svc/server.py and domain/compute.py know it by.
LocalResultStore = ResultStore


async def _pieces(
    read: Callable[[int], bytes], offset: int, error: Callable[[Exception], Exception] | None = None
) -> AsyncIterator[tuple[int, bytes]]:
    """(position, bytes) pieces from read, read a few pieces ahead in a thread of its own: the
    next pieces are read from disk (or S3, or IPFS) while this one is on its way to the client.
    At most READ_AHEAD pieces wait; a client that stops reading stops the reader."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[tuple[bytes | None, Exception | None]] = asyncio.Queue()
    room = threading.Semaphore(READ_AHEAD)
    stop = threading.Event()

    def deliver(item: tuple[bytes | None, Exception | None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            loop.call_soon_threadsafe(arrived.put_nowait, item)

    def reader() -> None:
        try:
            while not stop.is_set():
                if not room.acquire(timeout=1):
                    continue
                if stop.is_set():
                    return
                chunk = read(CHUNK_BYTES)
                deliver((chunk, None))
                if not chunk:
                    return
        except Exception as exc:
            deliver((None, exc))

    thread = threading.Thread(target=reader, name="result-reader", daemon=True)
    thread.start()
    try:
        position = offset
        while True:
            chunk, failure = await arrived.get()
            room.release()
            if failure is not None:
                if error is None:
                    raise failure
                raise error(failure) from None
            if not chunk:
                return
            yield position, chunk
            position += len(chunk)
    finally:
        stop.set()
        room.release()
        # Before the caller closes what is read: the reader is between reads within a read's time.
        await asyncio.to_thread(thread.join, 10)


def _file_error(exc: Exception) -> Exception:
    """What a consumer is told when the local store fails: the file is gone or cannot be read as
    it is (FAILED_PRECONDITION: retrying changes nothing until the operator acts), or the disk
    failed (UNAVAILABLE: a retry resumes at the offset it has). Never the path."""
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return FailedPrecondition("the result file is missing from the result store")
    if isinstance(exc, PermissionError):
        return FailedPrecondition(
            "this provider may not read the result file (permission denied in its result store)"
        )
    if isinstance(exc, IsADirectoryError):
        return FailedPrecondition("the result in the result store is not a file")
    if isinstance(exc, OSError):
        reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        return Unavailable(f"the result store cannot be read ({reason}); try again")
    return exc  # not the store's failure but ours: left as it is (INTERNAL)


def _s3_error(exc: Exception, code: str) -> Exception:
    if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
        return FailedPrecondition("the result file is missing from the result store")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return FailedPrecondition("this provider's credentials cannot read the result store")
    return Unavailable(f"the result store cannot be reached ({code or type(exc).__name__}); try again")


def _ipfs_error(exc: Exception) -> Exception:
    return Unavailable(f"the IPFS node cannot be read ({type(exc).__name__}); try again")


def _open_ipfs(api: str, gateway: str, cid: str, offset: int, timeout: int) -> Any:
    """The node's response positioned at offset (blocking), or None when nothing is left."""
    import urllib.error
    import urllib.request

    if api:
        request = urllib.request.Request(
            f"{api}/api/v0/cat?arg={quote(cid)}&offset={offset}&timeout={timeout}s", data=b"", method="POST"
        )
    else:
        request = urllib.request.Request(
            f"{gateway}/ipfs/{quote(cid)}", headers={"Range": f"bytes={offset}-"}
        )
    try:
        response = urllib.request.urlopen(request, timeout=timeout + 5)
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(Exception):
            exc.close()
        if exc.code == 416:
            return None
        raise FailedPrecondition(f"the IPFS node could not read the result (HTTP {exc.code})") from None
    except OSError as exc:
        raise _ipfs_error(exc) from None
    if not api and offset and response.status != 206:
        response.close()
        raise Unavailable("the IPFS gateway does not serve byte ranges; download from the start")
    return response
