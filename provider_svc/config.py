from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from c2d_common.env import ConfigError, env_paths, env_str
from c2d_common.file_urls import FileUrlPolicy
from provider_svc.domain.assets import ANYONE, PublisherPolicy

KEY_PATTERN = re.compile(r"(0x)?[0-9a-fA-F]{64}")
ADDRESS_PATTERN = re.compile(r"0x[0-9a-fA-F]{40}")


# The order of secp256k1's group: a private key is a number from 1 to N - 1.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _new_secp256k1_key() -> bytes:
    while True:
        raw = secrets.token_bytes(32)
        if 0 < int.from_bytes(raw, "big") < SECP256K1_N:
            return raw


def load_or_create_key(path: Path) -> str:
    """The provider's private key from a file; on the embedded default, created on first start
    (readable by this user only)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = "0x" + _new_secp256k1_key().hex()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
    key = path.read_text().strip()
    if not KEY_PATTERN.fullmatch(key):
        raise ConfigError(f"{path} does not hold a private key (64 hex digits)")
    return key


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
    # Nonces and spent orders: a SQLite file next to the assets by default, or PostgreSQL.
    database_url: str = ""
    # The provider's Ethereum key: its identity in signed requests, and the signer of its fees.
    private_key: str = ""
    # What services' serviceEndpoint must say for this provider to serve them.
    public_url: str = ""
    # Who may publish (C2D_PUBLISHERS; see PublisherPolicy): none listed, the default, lets anyone
    # publish public files and nobody name file:// or s3:// ones; "*" lets anyone publish anything.
    publishers: tuple[str, ...] = ()

    @property
    def state_dir(self) -> Path:
        return self.assets_dir.parent

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'provider.db'}"

    def resolved_public_url(self, port: int | None = None) -> str:
        """C2D_PROVIDER_URL, or the listen address with the port really bound (listening on port 0
        must not make every DDO name port 0, nor change the provider's name across a restart)."""
        if self.public_url:
            return self.public_url
        host = self.listen.rsplit(":", 1)[0]
        return f"grpc://{host}:{port}" if port else f"grpc://{self.listen}"

    def resolved_private_key(self) -> str:
        return self.private_key or load_or_create_key(self.state_dir / "provider.key")

    def file_policy(self) -> FileUrlPolicy:
        return FileUrlPolicy(
            roots=self.file_url_roots, denied=(self.assets_dir, self.results_dir, *self.file_url_denied)
        )

    def publisher_policy(self) -> PublisherPolicy:
        return PublisherPolicy.of(self.publishers)

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
            database_url=env_str("C2D_PROVIDER_DATABASE_URL", ""),
            private_key=_private_key_from_env(),
            public_url=env_str("C2D_PROVIDER_URL", ""),
            publishers=_publishers_from_env(),
        )


def _publishers_from_env() -> tuple[str, ...]:
    entries = tuple(p.strip() for p in env_str("C2D_PUBLISHERS", "").split(",") if p.strip())
    for entry in entries:
        if entry != ANYONE and not ADDRESS_PATTERN.fullmatch(entry):
            shown = entry if len(entry) <= 50 else entry[:50] + "…"
            raise ConfigError(
                f"C2D_PUBLISHERS holds {shown!r}, which is not an Ethereum address (0x and 40 hex "
                "digits); list the publishers' addresses separated by commas, or * for anyone"
            )
    return entries


def _private_key_from_env() -> str:
    key = env_str("C2D_PROVIDER_KEY", "")
    key_file = env_str("C2D_PROVIDER_KEY_FILE", "")
    if key_file and not key:
        key = Path(key_file).read_text().strip()
    if key and not KEY_PATTERN.fullmatch(key):
        raise ConfigError("C2D_PROVIDER_KEY (or the file C2D_PROVIDER_KEY_FILE) must be 64 hex digits")
    return key
