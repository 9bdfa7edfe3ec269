"""podtools publish: stores a job's outputs and logs in the result store (Ocean's pod-publishing).

Every regular file under /data/outputs (nested folders kept) becomes an output; the algorithm's
captured stdout and stderr and every file under /data/logs become logs. Symbolic links are never
followed: an algorithm could point one at a file it must not publish.

Usage: python -m podtools.publish RESULT_JSON [--logs-only] (--logs-only: the job went over its disk
quota, and none of its outputs is published). Writes {"ok": true, "files": [...]} with each file's
name, kind, size, sha256 and path in the store.
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


def _copy(source: str, destination: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    # O_NOFOLLOW: the file must not have become a link since it was listed.
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as reader, open(destination, "wb") as writer:
        while True:
            chunk = reader.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            digest.update(chunk)
            writer.write(chunk)
    return size, digest.hexdigest()


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as surrogate escapes
        return False
    return True


def _walk(root: str) -> list[tuple[str, str]]:
    """(relative name, absolute path) of every regular file under root, links skipped."""
    found: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            relative = os.path.relpath(path, root)
            if not stat.S_ISREG(mode):
                skipped.append((relative, "not a regular file"))
            elif not _is_utf8(relative):
                skipped.append((relative, "its name is not UTF-8"))
            else:
                found.append((relative, path))
    for relative, why in skipped:
        shown = relative.encode("utf-8", "backslashreplace").decode()
        print(f"publish: not publishing {shown}: {why}", file=sys.stderr)
    return found


def publish(include_outputs: bool = True) -> list[dict[str, object]]:
    files: list[dict[str, object]] = []

    def store(kind: str, name: str, source: str, folder: str) -> None:
        path = f"{folder}/{name}"
        size, sha256 = _copy(source, os.path.join(STORE, path))
        files.append({"name": name, "kind": kind, "size": size, "sha256": sha256, "path": path})

    for name, source in _walk(OUTPUTS) if include_outputs else []:
        store("output", name, source, "outputs")
    for captured in ("stdout.log", "stderr.log"):
        source = os.path.join(CAPTURED_LOGS, captured)
        if os.path.isfile(source):
            store("log", f"algorithm.{captured}", source, "logs")
    for name, source in _walk(LOGS):
        store("log", f"algorithm-logs/{name}", source, "logs")
    return files


def main(argv: list[str]) -> int:
    result_path = argv[1]
    try:
        files = publish(include_outputs="--logs-only" not in argv[2:])
    except Exception as exc:
        # Its text may hold paths: the consumer sees only its kind, the engine's log the rest.
        print(f"publish: {exc!r}", file=sys.stderr)
        write_result(result_path, ok=False, reason=f"storing the results failed ({type(exc).__name__})")
        return 2
    write_result(result_path, ok=True, files=files)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
