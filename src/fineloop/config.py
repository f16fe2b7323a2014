"""Settings, built on demand from `FINELOOP_*` variables and an optional TOML file.

Nothing here runs at import: call `get_settings()` where settings are needed, so tests and
embedded uses can build as many independent configurations as they like.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CONFIG_ENV = "FINELOOP_CONFIG"
# API keys: long enough to be unguessable, short enough that checking a bogus one is cheap.
MIN_KEY_CHARS = 32
MAX_KEY_CHARS = 256


class Settings(BaseSettings):
    """Everything a fineloop process needs to find its store, artifacts and keys."""

    # hide_input_in_errors: an error must not print a key or a database password.
    model_config = SettingsConfigDict(
        env_prefix="FINELOOP_",
        extra="forbid",
        env_parse_none_str="null",
        hide_input_in_errors=True,
    )

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
        "data_dir/artifacts) or any fsspec URL (s3://bucket/prefix, gs://bucket/prefix, "
        "file:///path); URL roots need the fsspec driver (fineloop[s3], fineloop[gcs]).",
    )
    artifact_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for a URL artifact_root, as JSON in "
        'FINELOOP_ARTIFACT_OPTIONS, e.g. {"endpoint_url": "http://minio:9000"}. Leave '
        "credentials to the store's own variables (AWS_ACCESS_KEY_ID, ...).",
    )
    artifact_cache_gb: float | None = Field(
        default=20.0,
        gt=0,
        description="With a URL artifact_root: the most disk the local copies of downloaded "
        "artifacts may take; the least recently used copies beyond it are deleted (never "
        "one used in the last 10 minutes). None keeps every copy.",
    )
    mirror_checkpoints: bool = Field(
        default=True,
        description="With a URL artifact_root: copy a training job's checkpoints there while "
        "it trains, so a retry on another machine resumes instead of starting over.",
    )
    models_root: Path | None = Field(
        default=None,
        description="The only folder base models may be read from (besides the packaged "
        "all-MiniLM-L6-v2 and hub ids); default data_dir/models. A base model path outside "
        "it is refused without saying whether it exists.",
    )
    allow_pickle_weights: bool = Field(
        default=False,
        description="Load base models whose weights are pickles (.bin, .pt, .ckpt) with no "
        "safetensors beside them. Unpickling runs code: leave it off unless you trust them.",
    )
    serving_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Threads that encode in the serving process (torch's and ONNX "
        "Runtime's: queries, index builds); none = one per core. 1 helped torch when the "
        "server shares a small machine with its clients; job processes are not affected.",
    )
    serving_backend: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description="How the serving process encodes: auto = ONNX Runtime when the model's "
        "exported graph gives torch's vectors (about 3x faster per query on a CPU), else "
        "torch; onnx = require it; torch = never export. Graphs are cached in data_dir/onnx.",
    )
    serving_wait_seconds: float = Field(
        default=2.0,
        ge=0,
        le=600,
        description="How long a search, select or embeddings request waits for an index "
        "build or model load that is not finished; past it the answer is 503 with "
        "Retry-After and the build's progress (the SDK waits and retries).",
    )
    ann_min_items: int | None = Field(
        default=200_000,
        ge=1,
        description="From this many items a project's search index is approximate: FAISS "
        "IVF (about 2 sqrt(n) lists, fp16 codes, candidates rescored from float32) with "
        "nprobe tuned so recall@10 against exact search is >= 0.98, measured on the "
        "project's recent queries (else on item vectors). Below it search is exact. None "
        "keeps every index exact (memory and latency grow with the catalog).",
    )
    routing_refresh_seconds: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="How often a serving process checks whether another process changed "
        "what requests resolve (a promotion, rollback, alias move, project or rollout "
        "change): such a change is served within this many seconds of its commit; one made "
        "through this process is served at once. 0 checks on every request (one one-row "
        "read).",
    )
    interaction_journal: bool = Field(
        default=True,
        description="Served requests (search, select, generate, extract…) journal their "
        "interaction to a file under data_dir and answer at once; a background thread "
        "stores the journal in one transaction per interval. A killed server loses none "
        "(the next start replays them); off: each request stores its own before answering.",
    )
    interaction_flush_seconds: float = Field(
        default=0.02,
        ge=0,
        le=3600,
        description="How long the interaction journal gathers before one store write. A "
        "server sharing the database sees a journaled interaction within about this long; "
        "this server sees it at once.",
    )
    interaction_journal_fsync: bool = Field(
        default=False,
        description="fsync each journal append, so an interaction survives power loss too "
        "(not only a crash of the server), at the cost of one disk sync per request.",
    )
    max_embedding_inputs: int = Field(
        default=2048,
        ge=1,
        le=100_000,
        description="Most texts one POST /v1/embeddings request may carry (422 beyond).",
    )
    max_embedding_chars: int = Field(
        default=1_000_000,
        ge=1,
        le=100_000_000,
        description="Most characters all texts of one POST /v1/embeddings request may "
        "carry together (422 beyond). Each text is also cut to 16 characters per token of "
        "the model's max_seq_length before tokenizing, since the model reads no further.",
    )
    train_nproc: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes that train one job (DDP through train_launcher): one per GPU "
        "of the machine; on a CPU they share its cores (gloo). A job may ask for its own.",
    )
    train_launcher: Literal["torchrun", "accelerate"] = Field(
        default="torchrun",
        description="Launcher of multi-process training: torchrun, or `accelerate launch` "
        "(which also reads `accelerate config`: FSDP, DeepSpeed).",
    )
    api_keys: str = Field(
        default="",
        description="Comma-separated `key:scope` pairs (scope ingest or admin) registered "
        "(hashed) at start-up, in addition to keys created with `fineloop keys create`. "
        f"Each key is {MIN_KEY_CHARS} to {MAX_KEY_CHARS} random characters.",
    )
    allowed_hosts: str = Field(
        default="",
        description="Comma-separated host names this server answers besides localhost, "
        "127.0.0.1, [::1] and IP addresses (e.g. fineloop.example.com); * answers any. "
        "Other Host headers get a 400, so a web page cannot reach the server through DNS "
        "rebinding.",
    )
    auth_failures_per_minute: int = Field(
        default=60,
        ge=0,
        le=1_000_000,
        description="Requests with an unknown API key one client address may send per "
        "minute; beyond it the address gets 429 with Retry-After until the minute ends. "
        "0 turns the limit off.",
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
    job_heartbeat_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often a worker refreshes the heartbeat of the jobs it runs (and "
        "looks for jobs whose worker stopped beating).",
    )
    job_stale_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="A running job whose heartbeat is older than this lost its worker: it "
        "is queued again (attempts left) or failed. Keep it several heartbeats long.",
    )

    @field_validator("sqlite_synchronous")
    @classmethod
    def _known_sync_mode(cls, value: str) -> str:
        mode = value.upper()
        if mode not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("must be one of OFF, NORMAL, FULL, EXTRA")
        return mode

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        """Refuse a bad entry when the settings are built, so the server does not start."""
        parse_api_keys(value)
        return value

    @model_validator(mode="after")
    def _stale_after_several_beats(self) -> Settings:
        if self.job_stale_seconds < 2 * self.job_heartbeat_seconds:
            raise ValueError(
                f"job_stale_seconds ({self.job_stale_seconds:g}) must be at least twice "
                f"job_heartbeat_seconds ({self.job_heartbeat_seconds:g}), or live jobs "
                "would be taken for lost"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fineloop.db').resolve()}"

    @property
    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str((self.data_dir / "artifacts").resolve())

    @property
    def resolved_models_root(self) -> Path:
        return (self.models_root or self.data_dir / "models").resolve()

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def configured_keys(self) -> list[tuple[str, str]]:
        """The `key:scope` pairs from `api_keys`, validated."""
        return parse_api_keys(self.api_keys)


def parse_api_keys(value: str) -> list[tuple[str, str]]:
    """`key:scope` pairs; a ValueError names the entry by number, never by its secret."""
    pairs: list[tuple[str, str]] = []
    for number, entry in enumerate(filter(None, (p.strip() for p in value.split(","))), 1):
        key, _, scope = entry.rpartition(":")
        if not key or scope not in {"ingest", "admin"}:
            raise ValueError(
                f"FINELOOP_API_KEYS entry {number} must look like KEY:ingest or KEY:admin"
            )
        if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS:
            raise ValueError(
                f"FINELOOP_API_KEYS entry {number} has a key of {len(key)} characters; keys "
                f"must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} random characters. Make one "
                'with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
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
