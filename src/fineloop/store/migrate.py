"""Apply Alembic migrations programmatically; the server and CLI call this on start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from fineloop.store.engine import writer

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


# Any fixed number: all fineloop processes take this lock before migrating.
_MIGRATION_LOCK = 0x66696E65


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to `revision`; safe when several processes start at once."""
    config = alembic_config()
    with writer(engine).begin() as connection:
        _serialize(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _serialize(connection: Connection) -> None:
    # SQLite is already serialized by BEGIN IMMEDIATE; PostgreSQL needs an explicit lock.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})


def downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with writer(engine).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
