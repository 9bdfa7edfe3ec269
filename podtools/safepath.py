"""Folders and files below a root that a name from outside cannot escape.

Every step goes through a directory file descriptor opened with O_NOFOLLOW, and files are created
with O_EXCL | O_NOFOLLOW: a name with a separator, "..", or a NUL is refused, and a symbolic link
planted anywhere on the way (by an earlier phase, or a second name that resolves to the same
place) is never followed.
"""

from __future__ import annotations

import contextlib
import os
import re

_PLAIN_DID = re.compile(r"did:[a-z0-9]+:[A-Za-z0-9._-]{1,128}")


class UnsafeName(Exception):
    pass


def check_segment(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise UnsafeName(f"{name[:80]!r} cannot be used as a file or folder name")
    return name


def did_folder_name(did: str) -> str:
    """A DID as a folder name, if it is a plain one: never a separator or ".." in it."""
    if not _PLAIN_DID.fullmatch(did) or ".." in did:
        raise UnsafeName(f"DID {did[:200]!r} cannot be used as a folder name")
    return did


def open_folder(root: str, *segments: str, create: bool = True) -> int:
    """A descriptor of root/segments/..., each made if missing; none may be a symbolic link."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for segment in segments:
            check_segment(segment)
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(segment, 0o755, dir_fd=fd)
            try:
                child = os.open(
                    segment, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except (NotADirectoryError, OSError) as exc:
                raise UnsafeName(f"{segment[:80]!r} is not a folder (a symbolic link?)") from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_file(folder_fd: int, name: str) -> int:
    """A new file in the folder, for writing; fails if anything (a link included) has the name."""
    check_segment(name)
    try:
        return os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=folder_fd
        )
    except FileExistsError:
        raise UnsafeName(f"{name[:80]!r} exists already") from None


def write_new(folder_fd: int, name: str, data: bytes) -> None:
    fd = create_file(folder_fd, name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
