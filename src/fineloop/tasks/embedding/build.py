"""The embedding dataset builder: a project's feedback → an immutable, content-hashed snapshot.

Layout written under `out_dir` (read by train and evaluate):
- `pairs/`: a `datasets.DatasetDict` ("train", "validation", "test"), one row per
  deduplicated (query, positive item): `anchor`, `positive`, `positive_id`, `negatives` and
  `negative_ids` (hard negatives, explicit rejections first, then mined; possibly empty),
  `query_group`, `feedback_ids` (the events behind the row), `score` (graded, in [0, 1]),
  `label` (1: every row is a positive pair; negatives carry label 0 when expanded).
- `corpus/`: a `datasets.Dataset` with `id`, `text`: every item of the project.
- `snapshot.json`: id, project, config, split sizes, stats, watermark, fineloop version.

The id is a sha256 over the project name, the build config and seed, every row with its
split, and the corpus: the same feedback gives the same id, and any change in what the
model would learn from gives a new one.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop import __version__
from fineloop.artifacts import fetch
from fineloop.config import Settings
from fineloop.errors import Invalid, NotFound
from fineloop.store import Store
from fineloop.store.projects import policy_of
from fineloop.store.schema import Item, Project
from fineloop.tasks.base import BuiltSnapshot
from fineloop.tasks.embedding.config import packaged_minilm_path
from fineloop.tasks.embedding.examples import harvest, merge_positives
from fineloop.tasks.embedding.mining import mine_item_negatives
from fineloop.tasks.embedding.rows import assemble_rows
from fineloop.tasks.embedding.splits import SPLITS, QueryGroups, assign_splits


class BuildConfig(BaseModel):
    """How feedback becomes a snapshot. Part of the snapshot's hash."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mine_negatives: bool = Field(
        default=True, description="Add negatives mined from the catalog with the given model."
    )
    negatives_per_query: int = Field(
        default=3,
        ge=0,
        le=64,
        description="Hard negatives kept per row: explicit rejections first, then mined ones "
        "fill the rest. 0 keeps none.",
    )
    margin: float = Field(
        default=0.1,
        ge=0,
        le=2,
        description="A mined candidate must score (cosine) at least this much below the "
        "query's weakest positive; closer ones are likely unlabelled positives.",
    )
    range_min: int = Field(
        default=0, ge=0, description="Skip this many top-ranked candidates when mining."
    )
    range_max: int | None = Field(
        default=None,
        ge=1,
        description="Consider candidates up to this rank when mining (default: the "
        "library's, 10 per wanted negative past range_min).",
    )
    validation_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of query groups held out for validation."
    )
    test_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Share of query groups held out for the test."
    )
    min_examples: int = Field(
        default=8, ge=1, description="Fewer (query, item) examples than this is an error."
    )
    max_query_chars: int = Field(
        default=2_000, ge=1, le=100_000, description="Longer queries are cut to this length."
    )

    @model_validator(mode="after")
    def _consistent(self) -> BuildConfig:
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must leave room for train")
        if self.range_max is not None and self.range_max - self.range_min < max(
            1, self.negatives_per_query
        ):
            raise ValueError("range_max - range_min must be at least negatives_per_query")
        return self


def build_snapshot(
    store: Store,
    settings: Settings,
    project: Project,
    out_dir: Path,
    *,
    seed: int,
    config: BuildConfig | None = None,
    model_path: str | None = None,
) -> BuiltSnapshot:
    """Write the project's snapshot under `out_dir` (which may exist, empty).

    `model_path` mines the negatives: pass the base or current champion model. Without it,
    the project's champion is used, else its base model, else the packaged default.
    """
    config = config or BuildConfig()
    with store.read() as session:
        found = harvest(
            session, project.id, policy_of(project), max_query_chars=config.max_query_chars
        )
        # Sorted here, not in SQL: collations differ between SQLite and PostgreSQL.
        corpus = sorted(
            (row.item_id, row.text)
            for row in session.execute(
                select(Item.item_id, Item.text).where(Item.project_id == project.id)
            )
        )
    stats: Counter[str] = found.stats
    groups = QueryGroups()
    for signal in found.signals:
        groups.add(signal.query, signal.group)
    examples = sorted(merge_positives(found.signals), key=lambda e: (e.query, e.item_id))
    stats["positive_signals"] = sum(s.positive for s in found.signals)
    stats["examples"] = len(examples)
    if len(examples) < config.min_examples:
        raise Invalid(
            f"training needs at least {config.min_examples} (query, item) examples; project "
            f"{project.name!r} has {len(examples)} — send more selections or labels",
            field="feedback",
        )
    split_of = assign_splits(
        {groups.key(e.query) for e in examples},
        seed=seed,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction,
    )
    texts = dict(corpus)
    mined: dict[str, list[str]] = {}
    mining = config.mine_negatives and config.negatives_per_query > 0
    if mining:
        if model_path is None:
            with store.read() as session:
                model_path = _default_mining_model(session, project)
        mined = mine_item_negatives(
            fetch(settings, model_path),  # a version on a URL root: its local copy
            examples,
            groups,
            texts,
            num_negatives=config.negatives_per_query,
            margin=config.margin,
            range_min=config.range_min,
            range_max=config.range_max,
        )
    rows = assemble_rows(
        examples,
        found.signals,
        groups,
        split_of,
        texts,
        mined,
        negatives_per_query=config.negatives_per_query,
        stats=stats,
    )
    hashed_config = {**config.model_dump(mode="json"), "seed": seed}
    snapshot_id = _content_hash(project.name, hashed_config, rows, corpus)
    splits = {name: sum(1 for r in rows if r["split"] == name) for name in SPLITS}
    for name in SPLITS:
        stats[f"groups_{name}"] = sum(1 for s in split_of.values() if s == name)
    full_stats: dict[str, Any] = {
        **dict(sorted(stats.items())),
        "decay_as_of": found.as_of.isoformat() if found.as_of else None,
    }
    full_config = {**hashed_config, "mining_model": model_path if mining else None}
    _write(out_dir, rows, corpus)
    meta = {
        "id": snapshot_id,
        "project": project.name,
        "task": "embedding",
        "config": full_config,
        "splits": splits,
        "stats": full_stats,
        "feedback_watermark": found.watermark,
        "fineloop_version": __version__,
        "built_at": datetime.now(UTC).isoformat(),
    }
    (out_dir / "snapshot.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    return BuiltSnapshot(
        id=snapshot_id,
        path=out_dir,
        splits=splits,
        stats=full_stats,
        config=full_config,
        feedback_watermark=found.watermark,
    )


def _default_mining_model(session: Session, project: Project) -> str:
    from fineloop.registry.versions import CHAMPION, resolve

    try:
        return resolve(session, project, CHAMPION).artifact_uri
    except NotFound:
        return project.base_model or packaged_minilm_path()


def _content_hash(
    project: str, config: dict[str, Any], rows: list[dict[str, Any]], corpus: list[tuple[str, str]]
) -> str:
    canonical = json.dumps(
        {"project": project, "config": config, "rows": rows, "corpus": corpus},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _write(out_dir: Path, rows: list[dict[str, Any]], corpus: list[tuple[str, str]]) -> None:
    from datasets import (  # type: ignore[import-untyped]
        Dataset,
        DatasetDict,
        Features,
        List,
        Value,
    )

    features = Features(
        {
            "anchor": Value("string"),
            "positive": Value("string"),
            "positive_id": Value("string"),
            "negatives": List(Value("string")),
            "negative_ids": List(Value("string")),
            "query_group": Value("string"),
            "feedback_ids": List(Value("int64")),
            "score": Value("float64"),
            "label": Value("int64"),
        }
    )
    columns = list(features)
    pairs = DatasetDict(
        {
            # Column-wise, so an empty split still carries its columns.
            name: Dataset.from_dict(
                {c: [r[c] for r in rows if r["split"] == name] for c in columns},
                features=features,
            )
            for name in SPLITS
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # An empty split saved with no shard cannot be loaded back: give it one.
    empty = {name: 1 for name in SPLITS if len(pairs[name]) == 0}
    pairs.save_to_disk(str(out_dir / "pairs"), num_shards=empty)
    catalog = Dataset.from_dict(
        {"id": [i for i, _ in corpus], "text": [t for _, t in corpus]},
        features=Features({"id": Value("string"), "text": Value("string")}),
    )
    catalog.save_to_disk(str(out_dir / "corpus"))
