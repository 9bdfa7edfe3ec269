"""`python -m operator_svc`: the job registry. Configured by C2D_* environment variables."""

from __future__ import annotations

import asyncio

from c2d_common.logging import configure_logging
from c2d_common.tracing import configure_tracing
from operator_svc.config import OperatorSettings
from operator_svc.server import serve


def main() -> None:
    configure_logging("operator")
    configure_tracing("operator")
    asyncio.run(serve(OperatorSettings.from_env()))


if __name__ == "__main__":
    main()
