"""The provider's ledger: the last nonce accepted per address, and the orders that paid for jobs

Revision ID: p0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "p0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumer_nonces",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "spent_orders",
        sa.Column("tx_id", sa.String(66), primary_key=True),
        sa.Column("datatoken", sa.String(42), primary_key=True),
        sa.Column("consumer", sa.String(42), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("did", sa.String(80), nullable=False),
        sa.Column("spent_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("spent_orders")
    op.drop_table("consumer_nonces")
