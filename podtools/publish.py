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
Symbolic links are never followed (an algorithm could point one at a file it must not publish):
they, and whatever is not a regular file, are listed on stderr and left out.

Writes {"ok": true, "files": [{"name", "kind": "output"|"log", "size", "sha256", and "path" (a
folder store, relative to it) or "location" (s3://…, ipfs://CID)}]} to RESULT_JSON; on failure
{"ok": false, "reason": …} and exit status 2, after removing what it had stored.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys

from podtools.resultfile import write_result

OUTPUTS = "/data/outputs"
LOGS = "/data/logs"
CAPTURED_LOGS = "/c2d/algorithm-logs"
STORE = "/results"
CHUNK = 1024 * 1024


class PublishError(Exception):
    """A failure whose text is safe to show the job's owner."""


def _open_regular(path: str) -> int:
    # O_NOFOLLOW: the file must not have become a link since it was listed.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PublishError("a result stopped being a regular file while it was published")
    return fd


# --- stores -------------------------------------------------------------------------------------------


class FolderStore:
    def __init__(self, root: str):
        self.root = root

    def put(self, fd: int, size: int, key: str) -> tuple[dict, str]:
        destination = os.path.join(self.root, key)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        digest = hashlib.sha256()
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
        digest = hashlib.sha256()
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

        digest = hashlib.sha256()
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


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as surrogate escapes
        return False
    return True


def _walk(root: str) -> list[tuple[str, str, int]]:
    """(relative name, absolute path, size) of every regular file under root, links skipped."""
    found: list[tuple[str, str, int]] = []
    skipped: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            # os.walk lists a link to a folder as a folder, and does not go in: say so.
            skipped.append(
                (os.path.relpath(os.path.join(dirpath, name), root), "a symbolic link is never followed")
            )
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            relative = os.path.relpath(path, root)
            if stat.S_ISLNK(info.st_mode):
                skipped.append((relative, "a symbolic link is never followed"))
            elif not stat.S_ISREG(info.st_mode):
                skipped.append((relative, "not a regular file"))
            elif not _is_utf8(relative):
                skipped.append((relative, "its name is not UTF-8"))
            else:
                found.append((relative, path, info.st_size))
    for relative, why in skipped:
        shown = relative.encode("utf-8", "backslashreplace").decode()
        print(f"publish: not publishing {shown}: {why}", file=sys.stderr)
    return found


def collect(
    include_outputs: bool = True, outputs: str = OUTPUTS, logs: str = LOGS, captured: str = CAPTURED_LOGS
) -> list[tuple[str, str, str, int]]:
    """(kind, name, path, size) of every file to publish."""
    files: list[tuple[str, str, str, int]] = []
    for name, path, size in _walk(outputs) if include_outputs else []:
        files.append(("output", name, path, size))
    for stream in ("stdout.log", "stderr.log"):
        path = os.path.join(captured, stream)
        if os.path.isfile(path) and not os.path.islink(path):
            files.append(("log", f"algorithm.{stream}", path, os.lstat(path).st_size))
    for name, path, size in _walk(logs):
        files.append(("log", f"algorithm-logs/{name}", path, size))
    return files


def publish(store, files: list[tuple[str, str, str, int]], quota: int = 0) -> list[dict[str, object]]:
    total = sum(size for _kind, _name, _path, size in files)
    if quota and total > quota:
        raise PublishError(
            f"the results take {total} bytes, more than this engine's quota of {quota} bytes per job; "
            "nothing was published"
        )
    published: list[dict[str, object]] = []
    for kind, name, path, size in files:
        fd = _open_regular(path)
        try:
            size = os.fstat(fd).st_size
            folder = "outputs" if kind == "output" else "logs"
            where, sha256 = store.put(fd, size, f"{folder}/{name}")
        finally:
            os.close(fd)
        published.append({"name": name, "kind": kind, "size": size, "sha256": sha256, **where})
    return published


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
        files = publish(store, collect(include_outputs="--logs-only" not in options), quota)
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
    write_result(result_path, ok=True, files=files)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
