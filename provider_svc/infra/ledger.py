"""The provider's own durable state: the last nonce accepted from each address, and the orders that
have paid for jobs. A SQLite file by default, or PostgreSQL (its own Alembic version table, so the
provider may share a database with the operator).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from c2d_common.errors import FailedPrecondition

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "provider_alembic_version"
METADATA = sa.MetaData()

NONCES = sa.Table(
    "consumer_nonces",
    METADATA,
    sa.Column("address", sa.String(42), primary_key=True),
    sa.Column("nonce", sa.BigInteger(), nullable=False),
)
SPENT_ORDERS = sa.Table(
    "spent_orders",
    METADATA,
    sa.Column("tx_id", sa.String(66), primary_key=True),
    sa.Column("datatoken", sa.String(42), primary_key=True),
    sa.Column("consumer", sa.String(42), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("did", sa.String(80), nullable=False),
    sa.Column("spent_at", sa.DateTime(timezone=True), nullable=False),
)


def migrate(engine: Engine) -> None:
    """Brings the schema to the newest revision; safe to run at every start."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass(frozen=True)
class OrderSpend:
    tx_id: str
    datatoken: str
    did: str


class OrderAlreadySpent(FailedPrecondition):
    pass


class Ledger:
    def __init__(self, engine: Engine):
        self.engine = engine

    # --- nonces -----------------------------------------------------------------------------------

    def _last_nonce(self, address: str) -> int:
        with self.engine.connect() as connection:
            value = connection.execute(
                sa.select(NONCES.c.nonce).where(NONCES.c.address == address)
            ).scalar_one_or_none()
        return int(value or 0)

    async def last_nonce(self, address: str) -> int:
        return await asyncio.to_thread(self._last_nonce, address)

    def _accept_nonce(self, address: str, nonce: int) -> int | None:
        # One conditional UPDATE (or the first INSERT) decides, atomically on SQLite and PostgreSQL
        # alike: two requests with the same nonce can never both pass.
        with self.engine.begin() as connection:
            updated = connection.execute(
                sa.update(NONCES)
                .where(NONCES.c.address == address, NONCES.c.nonce < nonce)
                .values(nonce=nonce)
            ).rowcount
            if updated == 1:
                return None
        try:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(NONCES).values(address=address, nonce=nonce))
            return None
        except IntegrityError:
            return self._last_nonce(address)

    async def accept_nonce(self, address: str, nonce: int) -> int | None:
        """None if `nonce` is above the last accepted one (it is now the last); otherwise the last
        accepted nonce, and nothing changes."""
        return await asyncio.to_thread(self._accept_nonce, address, nonce)

    # --- orders -----------------------------------------------------------------------------------

    def _spend(self, spends: list[OrderSpend], consumer: str, request_id: str) -> None:
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            for spend in spends:
                row = connection.execute(
                    sa.select(SPENT_ORDERS.c.consumer, SPENT_ORDERS.c.request_id).where(
                        SPENT_ORDERS.c.tx_id == spend.tx_id, SPENT_ORDERS.c.datatoken == spend.datatoken
                    )
                ).first()
                if row is not None:
                    if (row.consumer, row.request_id) == (consumer, request_id):
                        continue  # the same Start again: it answers the same job
                    raise OrderAlreadySpent(
                        f"order {spend.tx_id} for {spend.did} has already paid for another job: "
                        "place a new order (or reuseOrder) for this one"
                    )
                connection.execute(
                    sa.insert(SPENT_ORDERS).values(
                        tx_id=spend.tx_id,
                        datatoken=spend.datatoken,
                        consumer=consumer,
                        request_id=request_id,
                        did=spend.did,
                        spent_at=now,
                    )
                )

    async def spend(self, spends: list[OrderSpend], consumer: str, request_id: str) -> None:
        """Marks the orders as paying for the consumer's request, all or none. The same request
        (consumer and request_id) may spend the same orders again: Start is idempotent."""
        try:
            await asyncio.to_thread(self._spend, spends, consumer, request_id)
        except IntegrityError:
            # A concurrent Start spent one of them between our check and our insert.
            raise OrderAlreadySpent(
                "one of the orders has just paid for another job: place a new order for this one"
            ) from None
