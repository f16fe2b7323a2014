"""Settings, built on demand from `FINELOOP_*` variables and an optional TOML file.

Nothing here runs at import: call `get_settings()` where settings are needed, so tests and
embedded uses can build as many independent configurations as they like.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CONFIG_ENV = "FINELOOP_CONFIG"


class Settings(BaseSettings):
    """Everything a fineloop process needs to find its store, artifacts and keys."""

    model_config = SettingsConfigDict(env_prefix="FINELOOP_", extra="forbid")

    data_dir: Path = Field(
        default=Path(".fineloop"),
        description="Folder holding the embedded SQLite store and local artifacts.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; defaults to a SQLite file in data_dir. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db.",
    )
    artifact_root: str | None = Field(
        default=None,
        description="Where model artifacts and snapshots go: a local folder (default "
        "data_dir/artifacts) or any fsspec URL.",
    )
    api_keys: str = Field(
        default="",
        description="Comma-separated `key:scope` pairs (scope ingest or admin) registered "
        "(hashed) at start-up, in addition to keys created with `fineloop keys create`.",
    )
    sqlite_synchronous: str = Field(
        default="FULL",
        description="SQLite `synchronous` pragma. FULL survives power loss; NORMAL survives "
        "process crashes only and writes faster.",
    )
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024, description="Largest JSON request body accepted."
    )
    max_import_bytes: int = Field(
        default=1024 * 1024 * 1024, description="Largest file accepted by import routes."
    )
    max_batch_events: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        description="Most events (or items, interactions) accepted in one batch request.",
    )

    @field_validator("sqlite_synchronous")
    @classmethod
    def _known_sync_mode(cls, value: str) -> str:
        mode = value.upper()
        if mode not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("must be one of OFF, NORMAL, FULL, EXTRA")
        return mode

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fineloop.db').resolve()}"

    @property
    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str((self.data_dir / "artifacts").resolve())

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def configured_keys(self) -> list[tuple[str, str]]:
        """The `key:scope` pairs from `api_keys`, validated."""
        pairs: list[tuple[str, str]] = []
        for entry in filter(None, (part.strip() for part in self.api_keys.split(","))):
            key, _, scope = entry.rpartition(":")
            if not key or scope not in {"ingest", "admin"}:
                raise ValueError(
                    f"FINELOOP_API_KEYS entry {entry[:6]}… must look like KEY:ingest or KEY:admin"
                )
            pairs.append((key, scope))
        return pairs


def get_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings: explicit overrides > environment > config file > defaults."""
    path = config_file or os.environ.get(CONFIG_ENV)
    file_values: dict[str, Any] = {}
    if path:
        with Path(path).open("rb") as handle:
            loaded = tomllib.load(handle)
        file_values = dict(loaded.get("fineloop", loaded))
    env_values = Settings().model_dump(exclude_unset=True)
    merged = {**file_values, **env_values, **overrides}
    return Settings.model_validate(merged)
