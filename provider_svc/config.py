from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from c2d_common.env import env_paths, env_str
from c2d_common.file_urls import FileUrlPolicy


@dataclass(frozen=True)
class ProviderSettings:
    listen: str = "127.0.0.1:50051"
    operator_address: str = "127.0.0.1:50052"
    assets_dir: Path = Path("c2d-state/assets")
    # The local result store the engine publishes to; GetResult reads only under it.
    results_dir: Path = Path("c2d-state/results")
    # file:// inputs (the embedded default only): the folders they may lie in (C2D_FILE_URL_ROOTS;
    # none, the default, means no file:// inputs) and what they may never name (C2D_FILE_URL_DENY,
    # besides the provider's own state).
    file_url_roots: tuple[Path, ...] = ()
    file_url_denied: tuple[Path, ...] = ()
    port_file: str | None = None
    # host:port of the Prometheus /metrics endpoint; empty: none.
    metrics_listen: str | None = None

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
            file_url_roots=env_paths("C2D_FILE_URL_ROOTS"),
            file_url_denied=env_paths("C2D_FILE_URL_DENY"),
            port_file=env_str("C2D_PORT_FILE", "") or None,
            metrics_listen=env_str("C2D_METRICS_LISTEN", "") or None,
        )
