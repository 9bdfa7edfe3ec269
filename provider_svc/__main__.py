"""`python -m provider_svc`: the consumer-facing front door. Configured by C2D_* environment variables."""

from __future__ import annotations

import asyncio

from c2d_common.logging import configure_logging
from c2d_common.tracing import configure_tracing
from provider_svc.config import ProviderSettings
from provider_svc.server import serve


def main() -> None:
    configure_logging("provider")
    configure_tracing("provider")
    asyncio.run(serve(ProviderSettings.from_env()))


if __name__ == "__main__":
    main()
