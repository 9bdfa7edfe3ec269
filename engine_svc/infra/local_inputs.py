"""What the local backend provides itself, before (or instead of) the configuration sandbox.

The configuration sandbox exists to fetch inputs from elsewhere (http(s), S3, IPFS): that is where
untrusted bytes and hosts are met. Two kinds of input involve neither, and the engine lays them
out in the job's workspace itself:

- what the job's spec holds inline: each dataset's DDO (validated by the provider), the algorithm's
  parameters, a raw algorithm's code. Bytes written to new files; nothing is parsed.
- `file://` inputs (the embedded default's, already checked against C2D_FILE_URL_ROOTS): linked into
  the workspace when it is on the same filesystem (no copy, however large the file; the link names
  the very file that was opened and checked, never a path looked up again), else copied by the
  kernel (copy_file_range). Their declared size and sha256 are checked here.

Nothing of the source's location reaches the algorithm: its sandbox binds the workspace folders,
so even /proc/self/mountinfo shows workspace paths only, never the dataset's.

A job whose inputs are all of these kinds needs no configuration sandbox at all (a trivial job's
most expensive phase: a sandbox and an interpreter with the HTTP stack to start).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podtools.safepath import UnsafeName, open_folder, write_new

HASH_CHUNK = 1024 * 1024
COPY_CHUNK = 64 * 1024 * 1024


class LocalProvisioningFailed(Exception):
    def __init__(self, failed_input: str, reason: str):
        super().__init__(reason)
        self.failed_input = failed_input
        self.reason = reason


@dataclass(frozen=True)
class LocalFile:
    """A file:// input: where it is (resolved by the file URL policy) and where it goes."""

    source: str
    folder: tuple[str, ...]  # below the workspace's data folder, e.g. ("inputs", did)
    name: str
    sha256: str
    size: int
    failed_input: str  # "data" or "algorithm"
    label: str  # "dataset did:op:… file 0": what a reason names instead of a location


def write_inline(
    data_root: Path,
    dataset_ddos: list[tuple[str, dict[str, Any]]],
    parameters: dict[str, Any],
    raw_code: bytes,
) -> None:
    """The DDOs, the algorithm's parameters and a raw algorithm, in Ocean's layout."""
    try:
        ddos = open_folder(str(data_root), "ddos")
        try:
            for did, ddo in dataset_ddos:
                write_new(ddos, did, json.dumps(ddo).encode())
        finally:
            os.close(ddos)
        inputs = open_folder(str(data_root), "inputs")
        try:
            write_new(inputs, "algoCustomData.json", json.dumps(parameters).encode())
        finally:
            os.close(inputs)
        if raw_code:
            transformations = open_folder(str(data_root), "transformations")
            try:
                write_new(transformations, "algorithm", raw_code)
            finally:
                os.close(transformations)
    except UnsafeName as exc:
        # A DID twice among the datasets, or one that cannot be a file name.
        raise LocalProvisioningFailed("data", f"the inputs cannot be laid out: {exc}") from None


def provide_files(
    data_root: Path, files: list[LocalFile], copy_budget: int | None, cancelled: threading.Event
) -> int:
    """Links or copies each file into place, checking what its DDO declares; answers the bytes
    copied (linked files take no space). copy_budget: the most that may be copied (None: no limit)."""
    copied = 0
    for file in files:
        copied += _provide(data_root, file, None if copy_budget is None else copy_budget - copied, cancelled)
    return copied


def _provide(data_root: Path, file: LocalFile, copy_budget: int | None, cancelled: threading.Event) -> int:
    try:
        # The policy resolved every link of the path; one swapped in since is not followed.
        source = os.open(file.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise LocalProvisioningFailed(
            file.failed_input, f"{file.label} is not a readable file on this machine"
        ) from None
    try:
        info = os.fstat(source)
        if not stat.S_ISREG(info.st_mode):
            raise LocalProvisioningFailed(file.failed_input, f"{file.label} is not a regular file")
        if file.size and info.st_size != file.size:
            raise LocalProvisioningFailed(
                file.failed_input,
                f"{file.label} has {info.st_size} bytes, not the {file.size} its DDO declares",
            )
        if file.sha256:
            digest = _sha256(source, cancelled)
            if digest != file.sha256.lower():
                raise LocalProvisioningFailed(
                    file.failed_input, f"{file.label} does not match the sha256 its DDO declares"
                )
        try:
            folder = open_folder(str(data_root), *file.folder)
        except UnsafeName as exc:
            raise LocalProvisioningFailed(
                file.failed_input, f"the inputs cannot be laid out: {exc}"
            ) from None
        try:
            # Only a file anyone may read is linked: algorithms run as an unprivileged user, and a
            # private file is copied (as 0644) rather than have its own mode changed.
            if info.st_mode & 0o004 and _link(source, folder, file.name):
                return 0
            if copy_budget is not None and info.st_size > copy_budget:
                raise LocalProvisioningFailed(
                    "data", "the job's inputs are larger than its environment's disk allows"
                )
            _copy(source, folder, file, cancelled)
            return info.st_size
        finally:
            os.close(folder)
    finally:
        os.close(source)


def _sha256(fd: int, cancelled: threading.Event) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, HASH_CHUNK, offset):
        if cancelled.is_set():
            raise LocalProvisioningFailed("data", "cancelled")
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _link(source: int, folder: int, name: str) -> bool:
    """A hard link to the open file itself (/proc/self/fd names the inode, not a path); False
    where the kernel will not link it (another filesystem, or protected_hardlinks)."""
    try:
        os.link(f"/proc/self/fd/{source}", name, dst_dir_fd=folder, follow_symlinks=True)
        return True
    except FileExistsError:
        raise LocalProvisioningFailed(
            "data", f"the inputs cannot be laid out: {name!r} exists already"
        ) from None
    except OSError:
        return False


def _copy(source: int, folder: int, file: LocalFile, cancelled: threading.Event) -> None:
    try:
        target = os.open(
            file.name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=folder,
        )
    except FileExistsError:
        raise LocalProvisioningFailed(file.failed_input, f"{file.label}: its name is taken") from None
    try:
        copy: Callable[[int, int, int], int] = _copy_range
        while True:
            if cancelled.is_set():
                raise LocalProvisioningFailed("data", "cancelled")
            try:
                moved = copy(source, target, COPY_CHUNK)
            except OSError:
                if copy is _copy_range:  # a filesystem pair the kernel cannot copy between
                    copy = _copy_by_send
                    continue
                raise
            if moved == 0:
                return
    finally:
        os.close(target)


def _copy_range(source: int, target: int, size: int) -> int:
    return os.copy_file_range(source, target, size)


def _copy_by_send(source: int, target: int, size: int) -> int:
    return os.sendfile(target, source, None, size)
