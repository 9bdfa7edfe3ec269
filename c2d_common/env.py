"""Reading C2D_* environment variables with clear errors at start-up."""

from __future__ import annotations

import os
from pathlib import Path


class ConfigError(Exception):
    pass


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def env_paths(name: str) -> tuple[Path, ...]:
    """A list of folders, separated like PATH."""
    return tuple(Path(p).absolute() for p in os.environ.get(name, "").split(os.pathsep) if p)
