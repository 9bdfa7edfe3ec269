"""Alembic migrations build exactly the schema the SQLModel tables describe (SQLite in a tmp file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from operator_svc.infra import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from operator_svc.infra.database import alembic_config, make_engine, migrate


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/operator.db")
    yield engine
    engine.dispose()


def differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head(engine: Engine) -> str:
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False)))
    heads = script.get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def test_upgrading_an_empty_database_gives_the_model_schema(db: Engine) -> None:
    assert sa.inspect(db).get_table_names() == []
    migrate(db)
    assert differences(db) == []
    assert current_revision(db) == head(db)


def test_every_model_table_and_nothing_else_is_created(db: Engine) -> None:
    migrate(db)
    created = set(sa.inspect(db).get_table_names()) - {"alembic_version"}
    assert created == set(SQLModel.metadata.tables)


def test_migrating_again_is_a_no_op(db: Engine) -> None:
    migrate(db)
    migrate(db)
    assert differences(db) == []
    assert current_revision(db) == head(db)


def test_downgrade_to_base_and_up_again(db: Engine) -> None:
    migrate(db)
    config = alembic_config(db.url.render_as_string(hide_password=False))
    command.downgrade(config, "base")
    assert set(sa.inspect(db).get_table_names()) <= {"alembic_version"}
    assert current_revision(db) is None
    command.upgrade(config, "head")
    assert differences(db) == []


def test_every_revision_has_a_downgrade_and_one_parent_chain(db: Engine) -> None:
    script = ScriptDirectory.from_config(alembic_config(db.url.render_as_string(hide_password=False)))
    revisions = list(script.walk_revisions())
    assert revisions, "no migrations"
    assert [r for r in revisions if r.down_revision is None] == [revisions[-1]]
    for revision in revisions:
        assert callable(getattr(revision.module, "downgrade", None))
