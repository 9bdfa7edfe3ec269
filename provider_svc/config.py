from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from c2d_common.env import env_bool, env_str


@dataclass(frozen=True)
class ProviderSettings:
    listen: str = "127.0.0.1:50051"
    operator_address: str = "127.0.0.1:50052"
    assets_dir: Path = Path("c2d-state/assets")
    # The local result store the engine publishes to; GetResult reads only under it.
    results_dir: Path = Path("c2d-state/results")
    # file:// dataset URLs: for the embedded default only (they name files on this machine).
    allow_file_urls: bool = True
    port_file: str | None = None

    @classmethod
    def from_env(cls) -> ProviderSettings:
        return cls(
            listen=env_str("C2D_PROVIDER_LISTEN", cls.listen),
            operator_address=env_str("C2D_OPERATOR_ADDRESS", cls.operator_address),
            assets_dir=Path(env_str("C2D_ASSETS_DIR", str(cls.assets_dir))).absolute(),
            results_dir=Path(env_str("C2D_RESULTS_DIR", str(cls.results_dir))).absolute(),
            allow_file_urls=env_bool("C2D_ALLOW_FILE_URLS", cls.allow_file_urls),
            port_file=env_str("C2D_PORT_FILE", "") or None,
        )
