"""Alembic environment: migrations run from provider_svc.infra.ledger.migrate(), never by hand."""

from __future__ import annotations

from alembic import context

from provider_svc.infra.ledger import METADATA, VERSION_TABLE

config = context.config


def run_migrations() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=METADATA,
        render_as_batch=True,
        # Its own version table, so the provider may share a PostgreSQL database with the operator.
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
