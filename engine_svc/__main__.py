"""`python -m engine_svc`: runs jobs in sandboxes. Configured by C2D_* environment variables."""

from __future__ import annotations

import asyncio

from c2d_common.logging import configure_logging
from c2d_common.tracing import configure_tracing
from engine_svc.config import EngineSettings
from engine_svc.server import serve


def main() -> None:
    configure_logging("engine")
    configure_tracing("engine")
    asyncio.run(serve(EngineSettings.from_env()))


if __name__ == "__main__":
    main()
