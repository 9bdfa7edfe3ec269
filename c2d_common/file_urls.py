"""Which local files a file:// input may name (the embedded default only).

A dataset published with a file:// URL is read by the engine with the engine's rights, so a
publisher could otherwise name any file of the machine, the suite's own database included. Files
must lie under one of the configured roots (after resolving symlinks) and never under the suite's
own state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse


class FileUrlRefused(ValueError):
    pass


@dataclass(frozen=True)
class FileUrlPolicy:
    roots: tuple[Path, ...]
    denied: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls, default_roots: tuple[Path, ...], denied: tuple[Path, ...]) -> FileUrlPolicy:
        raw = os.environ.get("C2D_FILE_URL_ROOTS", "")
        roots = tuple(Path(p) for p in raw.split(os.pathsep) if p) or default_roots
        extra_denied = tuple(Path(p) for p in os.environ.get("C2D_FILE_URL_DENY", "").split(os.pathsep) if p)
        return cls(roots=roots, denied=denied + extra_denied)

    def check(self, url: str) -> Path:
        """The resolved local path of a file:// URL, or FileUrlRefused saying why not (without
        echoing the path: messages can reach consumers)."""
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise FileUrlRefused("not a local file:// URL")
        path = Path(os.path.realpath(unquote(parsed.path)))
        roots = [Path(os.path.realpath(r)) for r in self.roots]
        if not any(path == r or path.is_relative_to(r) for r in roots):
            raise FileUrlRefused(
                "file:// inputs must lie under the folders this provider serves data from "
                "(C2D_FILE_URL_ROOTS)"
            )
        for denied in self.denied:
            resolved = Path(os.path.realpath(denied))
            if path == resolved or path.is_relative_to(resolved):
                raise FileUrlRefused("file:// inputs may not name the suite's own state")
        return path
