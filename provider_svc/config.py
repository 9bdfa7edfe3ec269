from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from c2d_common.env import env_bool, env_str
from c2d_common.file_urls import FileUrlPolicy


@dataclass(frozen=True)
class ProviderSettings:
    listen: str = "127.0.0.1:50051"
    operator_address: str = "127.0.0.1:50052"
    assets_dir: Path = Path("c2d-state/assets")
    # The local result store the engine publishes to; GetResult reads only under it.
    results_dir: Path = Path("c2d-state/results")
    # file:// dataset URLs: for the embedded default only (they name files on this machine).
    allow_file_urls: bool = True
    # Where file:// inputs may lie (C2D_FILE_URL_ROOTS, default: the folder the provider starts in),
    # and what they may never name (C2D_FILE_URL_DENY, besides the provider's own state).
    file_url_roots: tuple[Path, ...] = field(default_factory=lambda: (Path.cwd(),))
    file_url_denied: tuple[Path, ...] = ()
    port_file: str | None = None

    def file_policy(self) -> FileUrlPolicy:
        return FileUrlPolicy(
            roots=self.file_url_roots, denied=(self.assets_dir, self.results_dir, *self.file_url_denied)
        )

    @classmethod
    def from_env(cls) -> ProviderSettings:
        return cls(
            listen=env_str("C2D_PROVIDER_LISTEN", cls.listen),
            operator_address=env_str("C2D_OPERATOR_ADDRESS", cls.operator_address),
            assets_dir=Path(env_str("C2D_ASSETS_DIR", str(cls.assets_dir))).absolute(),
            results_dir=Path(env_str("C2D_RESULTS_DIR", str(cls.results_dir))).absolute(),
            allow_file_urls=env_bool("C2D_ALLOW_FILE_URLS", cls.allow_file_urls),
            file_url_roots=_paths("C2D_FILE_URL_ROOTS") or (Path.cwd(),),
            file_url_denied=_paths("C2D_FILE_URL_DENY"),
            port_file=env_str("C2D_PORT_FILE", "") or None,
        )


def _paths(variable: str) -> tuple[Path, ...]:
    return tuple(Path(p).absolute() for p in env_str(variable, "").split(os.pathsep) if p)
