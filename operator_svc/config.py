from __future__ import annotations

from dataclasses import dataclass

from c2d_common.env import env_int, env_str


@dataclass(frozen=True)
class OperatorSettings:
    listen: str = "127.0.0.1:50052"
    database_url: str = "sqlite:///c2d-state/operator.db"
    # One engine or several (C2D_ENGINE_ADDRESS, comma-separated), sharing the jobs.
    engine_addresses: tuple[str, ...] = ("127.0.0.1:50053",)
    log_limit_bytes: int = 8 * 1024 * 1024
    engine_retry_seconds: int = 60
    port_file: str | None = None
    # host:port of the Prometheus /metrics endpoint; empty: none.
    metrics_listen: str | None = None

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            listen=env_str("C2D_OPERATOR_LISTEN", cls.listen),
            database_url=env_str("C2D_DATABASE_URL", cls.database_url),
            engine_addresses=tuple(
                a.strip()
                for a in env_str("C2D_ENGINE_ADDRESS", ",".join(cls.engine_addresses)).split(",")
                if a.strip()
            ),
            log_limit_bytes=env_int("C2D_LOG_LIMIT_BYTES", cls.log_limit_bytes),
            engine_retry_seconds=env_int("C2D_ENGINE_RETRY_SECONDS", cls.engine_retry_seconds),
            port_file=env_str("C2D_PORT_FILE", "") or None,
            metrics_listen=env_str("C2D_METRICS_LISTEN", "") or None,
        )
