"""Which local files a file:// input may name (the embedded default only).

A dataset published with a file:// URL is read by the engine with the engine's rights, so a
publisher could otherwise name any file of the machine, the suite's own database included. So
file:// inputs are opt-in (C2D_FILE_URL_ROOTS lists the folders data may come from), files must lie
under one of those roots (after resolving symlinks), and never under the suite's own state (the
service's own folders, plus C2D_FILE_URL_DENY: point it at the operator's database folder).
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
    # The local result store: a result asset (results published as a new asset, see
    # provider_svc.domain.assets) names its files there. Only the provider writes such DDOs (a
    # publisher's file:// URL under it is refused on the way in), so the engine reads them whatever
    # roots and denied say.
    results: tuple[Path, ...] = ()

    @property
    def enabled(self) -> bool:
        """file:// inputs are opt-in: without roots (C2D_FILE_URL_ROOTS unset) there are none."""
        return bool(self.roots)

    def check(self, url: str) -> Path:
        """The resolved local path of a file:// URL, or FileUrlRefused saying why not (without
        echoing the path: messages can reach consumers)."""
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise FileUrlRefused("not a local file:// URL")
        path = Path(os.path.realpath(unquote(parsed.path)))
        if any(_under(path, r) for r in self.results):
            return path
        if not self.enabled:
            raise FileUrlRefused("this provider serves no file:// data (C2D_FILE_URL_ROOTS is not set)")
        if not any(_under(path, r) for r in self.roots):
            raise FileUrlRefused(
                "file:// inputs must lie under the folders this provider serves data from "
                "(C2D_FILE_URL_ROOTS)"
            )
        if any(_under(path, d) for d in self.denied):
            raise FileUrlRefused("file:// inputs may not name the suite's own state")
        return path


def _under(path: Path, folder: Path) -> bool:
    """path (already resolved) is folder or lies under it, once folder's symlinks are resolved."""
    resolved = Path(os.path.realpath(folder))
    return path == resolved or path.is_relative_to(resolved)
