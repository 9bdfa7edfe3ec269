"""The whole suite (tests.harness.running_suite) configured for a storage test: the C2D_* storage
variables set in the environment (as a deployment sets them; the engine and the provider read them
when they are built) and in the engine's settings, http(s) inputs from loopback allowed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

from c2d_common.storage import StorageSettings
from engine_svc.config import EngineSettings
from tests.harness import Suite, running_suite

STORAGE_VARIABLES = (
    "C2D_RESULT_STORE",
    "C2D_RESULT_QUOTA_BYTES",
    "C2D_S3_ENDPOINT_URL",
    "C2D_S3_REGION",
    "C2D_S3_ACCESS_KEY_ID",
    "C2D_S3_SECRET_ACCESS_KEY",
    "C2D_S3_SESSION_TOKEN",
    "C2D_S3_RESULT_ACCESS_KEY_ID",
    "C2D_S3_RESULT_SECRET_ACCESS_KEY",
    "C2D_S3_RESULT_SESSION_TOKEN",
    "C2D_S3_ADDRESSING_STYLE",
    "C2D_S3_INPUT_BUCKETS",
    "C2D_S3_PART_BYTES",
    "C2D_S3_CONCURRENCY",
    "C2D_IPFS_API",
    "C2D_IPFS_GATEWAY",
    "C2D_IPFS_TIMEOUT_SECONDS",
    "C2D_INPUT_STALL_SECONDS",
    "C2D_INPUT_PARALLEL_FETCHES",
    "C2D_MAX_INPUT_BYTES",
)


@contextlib.contextmanager
def storage_environment(values: dict[str, str]) -> Iterator[StorageSettings]:
    """Exactly these storage variables set (the others unset) while the block runs."""
    saved = {name: os.environ.get(name) for name in STORAGE_VARIABLES}
    try:
        for name in STORAGE_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(values)
        yield StorageSettings.from_env()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.asynccontextmanager
async def storage_suite(
    root: Path, env: dict[str, str], engine_settings: EngineSettings | None = None
) -> AsyncIterator[Suite]:
    with storage_environment(env) as storage:
        settings = replace(
            engine_settings or EngineSettings(), allow_private_input_hosts=True, storage=storage
        )
        async with running_suite(root, engine_settings=settings) as suite:
            yield suite
