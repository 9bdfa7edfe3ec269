"""podtools publish: stores a job's outputs and logs in the result store (Ocean's pod-publishing).

Usage: python -m podtools.publish RESULT_JSON [--store STORE] [--quota BYTES] [--logs-only]

    --store STORE   where the results go:
                      a folder (default /results)   FOLDER/outputs/NAME, FOLDER/logs/NAME
                      s3://BUCKET/PREFIX            objects PREFIX/ID/outputs/NAME, PREFIX/ID/logs/NAME
                                                    (ID random for each publish, NAME
                                                    percent-encoded; multipart above
                                                    C2D_S3_PART_BYTES)
                      ipfs:MFS_FOLDER               added through the node's RPC API, kept in its
                                                    MFS at MFS_FOLDER/outputs/NAME, …
                    S3 and IPFS settings come from C2D_S3_* and C2D_IPFS_* (docs/storage.md).
    --quota BYTES   publish nothing (and fail) when the results together are larger.
    --logs-only     the job went over its disk quota: none of its outputs is published.

Every regular file under /data/outputs (nested folders kept) becomes an output; the algorithm's
captured stdout and stderr (/c2d/algorithm-logs) and every file under /data/logs become logs.
The folders are walked through directory descriptors, one name at a time with O_NOFOLLOW, and
each file is opened the same way (O_NOFOLLOW | O_NONBLOCK) and checked to be the regular file
that was listed: symbolic links are never followed (an algorithm could point one at a file it
must not publish), and no path is looked up twice. Links, whatever is not a regular file, and
what the algorithm made unreadable (chmod 000: the outputs are read-only here, so their
permissions cannot be given back) are left out, each with a line on stderr and in the log
publish.log, published with the others, so the job's owner learns what is missing and why.

Writes {"ok": true, "files": [{"name", "kind": "output"|"log", "size", "sha256", and "path" (a
folder store, relative to it) or "location" (s3://…, ipfs://CID)}], "skipped": [line, …]} to
RESULT_JSON; on failure {"ok": false, "reason": …} and exit status 2, after removing what it
had stored.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from podtools.resultfile import write_result

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: a podtool's start-up is paid by every job
    from typing import Any

OUTPUTS = "/data/outputs"
LOGS = "/data/logs"
CAPTURED_LOGS = "/c2d/algorithm-logs"
STORE = "/results"
CHUNK = 1024 * 1024


class PublishError(Exception):
    """A failure whose text is safe to show the job's owner."""


# Below this size a file is hashed by the interpreter's own sha256, which needs no OpenSSL: loading
# it (hashlib) took ~5 ms of every publish, more than hashing a small job's outputs. Above it,
# OpenSSL's is several times faster.
SMALL_FILE_BYTES = 4 * 1024 * 1024


def sha256_for(size: int) -> Any:
    """A sha256 hash object for a file of `size` bytes."""
    if size <= SMALL_FILE_BYTES:
        for module in ("_sha256", "_sha2"):  # Python 3.11; 3.12 and later
            try:
                return __import__(module).sha256()
            except ImportError:
                continue
    import hashlib

    return hashlib.sha256()


# --- stores -------------------------------------------------------------------------------------------


class FolderStore:
    def __init__(self, root: str):
        self.root = root

    def put(self, fd: int, size: int, key: str) -> tuple[dict, str]:
        destination = os.path.join(self.root, key)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        digest = sha256_for(size)
        with open(destination, "wb") as writer:
            offset = 0
            while True:
                piece = os.pread(fd, CHUNK, offset)
                if not piece:
                    break
                offset += len(piece)
                digest.update(piece)
                writer.write(piece)
        if offset != size:
            raise PublishError("a result changed size while it was published")
        return {"path": key}, digest.hexdigest()

    def discard(self) -> None:
        import shutil

        for folder in ("outputs", "logs"):
            shutil.rmtree(os.path.join(self.root, folder), ignore_errors=True)


class S3Store:
    """Objects PREFIX/<publish id>/{outputs,logs}/NAME, NAME percent-encoded.

    The publish id, random and new for every publish, makes a result's location as secret as the
    result: only the suite learns it (consumers never see locations), so the engine may read a
    location under it as a result asset's input, while any other key of the store, and any key a
    consumer could derive from a job id, stays refused (c2d_common.storage.check_s3_input).

    Names are percent-encoded (all but letters, digits, "-._~" and "/"), so the location
    s3://BUCKET/KEY is a plain URL: `#`, `?`, `%`, spaces or non-ASCII in a name cannot make a
    reader of the location take another key (urlparse stops a path at "#" and "?").
    """

    def __init__(self, url: str):
        import secrets

        from podtools import s3

        self.bucket, prefix = s3.split(url)
        self.prefix = "/".join(part for part in (prefix.strip("/"), secrets.token_hex(16)) if part)
        self.stored: list[str] = []

    def put(self, fd: int, size: int, key: str) -> tuple[dict, str]:
        import threading
        from urllib.parse import quote

        from boto3.s3.transfer import TransferConfig

        from podtools import s3

        object_key = f"{self.prefix}/{quote(key, safe='/')}"
        part = s3.part_bytes()
        config = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=s3.concurrency(),
            use_threads=True,
        )
        # The transfer manager reads the parts by file name, in parallel; /proc/self/fd names
        # the very file opened (no link followed) while the sha256 is computed beside it.
        digest = sha256_for(size)
        hashed = [0]

        def hash_all() -> None:
            offset = 0
            while True:
                piece = os.pread(fd, CHUNK, offset)
                if not piece:
                    break
                digest.update(piece)
                offset += len(piece)
            hashed[0] = offset

        hasher = threading.Thread(target=hash_all, daemon=True)
        hasher.start()
        self.stored.append(object_key)
        try:
            s3.client().upload_file(f"/proc/self/fd/{fd}", self.bucket, object_key, Config=config)
        except Exception as exc:
            raise PublishError(f"the S3 result store failed: {s3.error_text(exc)}") from exc
        finally:
            hasher.join()
        if hashed[0] != size:
            raise PublishError("a result changed size while it was published")
        return {"location": f"s3://{self.bucket}/{object_key}"}, digest.hexdigest()

    def discard(self) -> None:
        from podtools import s3

        for index in range(0, len(self.stored), 1000):
            batch = [{"Key": key} for key in self.stored[index : index + 1000]]
            try:
                s3.client().delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except Exception as exc:
                print(f"publish: could not remove what was stored ({s3.error_text(exc)})", file=sys.stderr)
                return


class IpfsStore:
    def __init__(self, mfs_folder: str):
        if not mfs_folder.startswith("/") or ".." in mfs_folder.split("/"):
            raise PublishError("the IPFS store needs an absolute MFS folder (ipfs:/FOLDER)")
        self.folder = mfs_folder.rstrip("/")

    def put(self, fd: int, size: int, key: str) -> tuple[dict, str]:
        from podtools import ipfs

        digest = sha256_for(size)
        try:
            cid = ipfs.add(fd, size, digest.update)
            ipfs.keep(cid, f"{self.folder}/{key}")
        except (ipfs.IpfsError, OSError) as exc:
            raise PublishError(f"the IPFS result store failed: {_reason(exc)}") from exc
        return {"location": f"ipfs://{cid}"}, digest.hexdigest()

    def discard(self) -> None:
        from podtools import ipfs

        try:
            ipfs.remove(self.folder)
        except Exception as exc:
            print(f"publish: could not remove what was stored ({_reason(exc)})", file=sys.stderr)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "the node refused the connection"
    if isinstance(exc, TimeoutError):
        return "the node did not answer in time"
    if isinstance(exc, OSError):
        return f"the connection failed ({type(exc).__name__})"
    return str(exc)


def store_for(spec: str):
    if spec.startswith("s3://"):
        return S3Store(spec)
    if spec.startswith("ipfs:"):
        return IpfsStore(spec[len("ipfs:") :])
    if spec.startswith("/"):
        return FolderStore(spec)
    raise PublishError(f"unknown result store {spec[:60]!r}: a folder, s3://BUCKET/PREFIX or ipfs:FOLDER")


# --- what to publish ----------------------------------------------------------------------------------

# Folders are opened one name at a time below a descriptor, never through a link; files without
# following a link and without blocking (a FIFO swapped in cannot hang the publish).
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# The log that says what was left out and why, published beside the algorithm's logs.
PUBLISH_LOG = "publish.log"


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as surrogate escapes
        return False
    return True


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _open_folder(root_fd: int, parts: tuple[str, ...], identity: tuple[int, int]) -> int:
    """A descriptor of the folder root/parts…, each step one name opened with O_NOFOLLOW from the
    step before; it must still be the folder that was seen (device and inode)."""
    fd = os.open(".", _FOLDER_FLAGS, dir_fd=root_fd)
    try:
        for part in parts:
            child = os.open(part, _FOLDER_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        if _identity(os.fstat(fd)) != identity:
            raise PublishError("a folder of the results changed while they were published")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_file(folder_fd: int, name: str, identity: tuple[int, int]) -> int:
    fd = os.open(name, _FILE_FLAGS, dir_fd=folder_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or _identity(info) != identity:
        os.close(fd)
        raise PublishError("a result changed while it was published")
    return fd


def _why(exc: OSError) -> str:
    """Why an entry cannot be read: the algorithm may have taken its own permissions away (the
    outputs are read-only here, so they cannot be given back), or swapped it meanwhile."""
    if isinstance(exc, PermissionError):
        return "cannot be read (its permissions deny it)"
    if exc.errno == errno.ELOOP:
        return "became a symbolic link (never followed)"
    return f"cannot be read ({errno.errorcode.get(exc.errno or 0, type(exc).__name__)})"


class Candidate:
    """A regular file to publish, found through descriptors below one of the roots: when its turn
    comes it is opened the same way, one name at a time, and only if its folder and itself are
    still what was found (device and inode)."""

    __slots__ = ("file_name", "folder", "folder_identity", "identity", "kind", "name", "root_fd", "size")

    def __init__(
        self,
        kind: str,
        name: str,
        root_fd: int,
        folder: tuple[tuple[str, ...], tuple[int, int]],
        file_name: str,
        info: os.stat_result,
    ) -> None:
        self.kind = kind
        self.name = name
        self.root_fd = root_fd
        self.folder, self.folder_identity = folder
        self.file_name = file_name
        self.size = info.st_size
        self.identity = _identity(info)

    def open(self) -> int:
        folder_fd = _open_folder(self.root_fd, self.folder, self.folder_identity)
        try:
            return _open_file(folder_fd, self.file_name, self.identity)
        finally:
            os.close(folder_fd)


class Collection:
    """What publish found: the files to publish, and a line for each thing it leaves out (for
    publish.log). Holds a descriptor of each root until closed."""

    def __init__(self) -> None:
        self.files: list[Candidate] = []
        self.skipped: list[str] = []
        self._roots: list[int] = []

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._roots:
            os.close(fd)
        self._roots = []

    def skip(self, entry: str, why: str) -> None:
        line = f"{entry.encode('utf-8', 'backslashreplace').decode()} {why}"
        self.skipped.append(line)
        print(f"publish: {line}", file=sys.stderr)

    def _open_root(self, path: str, label: str) -> tuple[int, tuple[int, int]] | None:
        try:
            fd = os.open(path, _FOLDER_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.skip(label, _why(exc) + ": nothing in it is published")
            return None
        self._roots.append(fd)
        return fd, _identity(os.fstat(fd))

    def walk(self, kind: str, path: str, label: str, prefix: str = "") -> None:
        """Every regular file under the folder, in name order (a folder's files before its
        subfolders), named prefix + its path below the folder. A folder is reopened from the root
        when its turn comes, so that few descriptors are open however wide or deep the tree."""
        opened = self._open_root(path, label)
        if opened is None:
            return
        root_fd, root_identity = opened
        pending: list[tuple[tuple[str, ...], tuple[int, int]]] = [((), root_identity)]
        while pending:
            parts, identity = pending.pop()
            try:
                fd = _open_folder(root_fd, parts, identity)
            except OSError as exc:
                self.skip("/".join((label, *parts)), _why(exc) + ": nothing in it is published")
                continue
            try:
                names = sorted(os.listdir(fd))
            except OSError as exc:
                os.close(fd)
                self.skip("/".join((label, *parts)), _why(exc) + ": nothing in it is published")
                continue
            subfolders = []
            try:
                for name in names:
                    relative = (*parts, name)
                    entry = "/".join((label, *relative))
                    try:
                        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                        if stat.S_ISDIR(info.st_mode):
                            subfolders.append((relative, _identity(info)))
                        elif stat.S_ISLNK(info.st_mode):
                            self.skip(entry, "is a symbolic link (never followed): not published")
                        elif not stat.S_ISREG(info.st_mode):
                            self.skip(entry, "is not a regular file: not published")
                        elif not _is_utf8("/".join(relative)):
                            self.skip(entry, "has a name that is not UTF-8: not published")
                        else:
                            os.close(_open_file(fd, name, _identity(info)))  # readable, now
                            self.files.append(
                                Candidate(
                                    kind, prefix + "/".join(relative), root_fd, (parts, identity), name, info
                                )
                            )
                    except OSError as exc:
                        self.skip(entry, _why(exc) + ": not published")
            finally:
                os.close(fd)
            pending.extend(reversed(subfolders))

    def add(self, kind: str, name: str, path: str, label: str, file_name: str) -> None:
        """One file directly in the folder (the captured stdout or stderr), if it is a regular file."""
        opened = self._open_root(path, label)
        if opened is None:
            return
        root_fd, root_identity = opened
        try:
            info = os.stat(file_name, dir_fd=root_fd, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                os.close(_open_file(root_fd, file_name, _identity(info)))
                self.files.append(Candidate(kind, name, root_fd, ((), root_identity), file_name, info))
        except FileNotFoundError:
            return
        except OSError as exc:
            self.skip(f"{label}/{file_name}", _why(exc) + ": not published")


def collect(
    include_outputs: bool = True, outputs: str = OUTPUTS, logs: str = LOGS, captured: str = CAPTURED_LOGS
) -> Collection:
    """Every file to publish, and what is left out and why. The caller closes it."""
    found = Collection()
    try:
        if include_outputs:
            found.walk("output", outputs, "outputs")
        for stream in ("stdout.log", "stderr.log"):
            found.add("log", f"algorithm.{stream}", captured, "captured logs", stream)
        found.walk("log", logs, "logs", prefix="algorithm-logs/")
    except BaseException:
        found.close()
        raise
    return found


def _publish_log(skipped: list[str]) -> int:
    """A descriptor of publish.log's text: what was left out and why (an anonymous file in memory,
    which every store reads as it reads a result)."""
    fd = os.memfd_create(PUBLISH_LOG, os.MFD_CLOEXEC)
    data = memoryview("".join(f"{line}\n" for line in skipped).encode())
    while data:
        data = data[os.write(fd, data) :]
    return fd


def publish(store, found: Collection, quota: int = 0) -> list[dict[str, object]]:
    log_fd = _publish_log(found.skipped) if found.skipped else None
    try:
        total = sum(c.size for c in found.files) + (os.fstat(log_fd).st_size if log_fd is not None else 0)
        if quota and total > quota:
            raise PublishError(
                f"the results take {total} bytes, more than this engine's quota of {quota} bytes per job; "
                "nothing was published"
            )
        published: list[dict[str, object]] = []
        for candidate in found.files:
            try:
                fd = candidate.open()
            except OSError as exc:  # a link or something else put in its (or its folder's) place
                raise PublishError(
                    f"a result changed while it was published: {candidate.name} {_why(exc)}"
                ) from None
            try:
                published.append(_put(store, fd, candidate.kind, candidate.name))
            finally:
                os.close(fd)
        if log_fd is not None:
            published.append(_put(store, log_fd, "log", PUBLISH_LOG))
        return published
    finally:
        if log_fd is not None:
            os.close(log_fd)


def _put(store, fd: int, kind: str, name: str) -> dict[str, object]:
    size = os.fstat(fd).st_size
    folder = "outputs" if kind == "output" else "logs"
    where, sha256 = store.put(fd, size, f"{folder}/{name}")
    return {"name": name, "kind": kind, "size": size, "sha256": sha256, **where}


def _options(argv: list[str]) -> dict[str, str]:
    options = {"--store": STORE, "--quota": "0"}
    rest = list(argv)
    while rest:
        flag = rest.pop(0)
        if flag == "--logs-only":
            options[flag] = "yes"
        elif flag in ("--store", "--quota") and rest:
            options[flag] = rest.pop(0)
        else:
            raise ValueError(f"unknown argument {flag!r}")
    return options


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 64
    result_path = argv[1]
    try:
        options = _options(argv[2:])
        quota = int(options["--quota"])
    except ValueError as exc:
        print(f"publish: {exc}\n{__doc__}", file=sys.stderr)
        return 64
    store = None
    try:
        store = store_for(options["--store"])
        with collect(include_outputs="--logs-only" not in options) as found:
            files = publish(store, found, quota)
            skipped = found.skipped
    except PublishError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        if store is not None:
            store.discard()
        write_result(result_path, ok=False, reason=str(exc))
        return 2
    except Exception as exc:
        # Its text may hold paths: the consumer sees only its kind, the engine's log the rest.
        print(f"publish: {exc!r}", file=sys.stderr)
        if store is not None:
            store.discard()
        write_result(result_path, ok=False, reason=f"storing the results failed ({type(exc).__name__})")
        return 2
    write_result(result_path, ok=True, files=files, skipped=skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
