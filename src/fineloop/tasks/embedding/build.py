"""The embedding dataset builder: a project's feedback → an immutable, content-hashed snapshot.

Layout written under `out_dir` (read by train and evaluate):
- `pairs/`: a `datasets.DatasetDict` ("train", "validation", "test"), one row per
  deduplicated (query, positive item): `anchor`, `positive`, `positive_id`, `negatives` and
  `negative_ids` (hard negatives, explicit rejections first, then mined; possibly empty),
  `query_group`, `feedback_ids` (the events behind the row), `score` (graded, in [0, 1]),
  `label` (1: every row is a positive pair; negatives carry label 0 when expanded), and
  lineage: `synthetic` (False for rows from feedback), `generator`, `prompt_hash`.
  Generated rows (generated.py; the project's `train.synthetic_queries` and
  `train.augmentation`, off by default) are queries written for items without feedback
  and paraphrases of train queries, in the train split only.
- `corpus/`: a `datasets.Dataset` with `id`, `text`: every item of the project.
- `snapshot.json`: id, project, config, split sizes, stats, watermark, fineloop version.

The id is a sha256 over the project name, the build config and seed, every row with its
split, and the corpus: the same feedback gives the same id, and any change in what the
model would learn from gives a new one. Synthetic queries come from a cache per item
content, so the same feedback and cache give the same id with them on too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from datasets import Value  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fineloop.config import Settings
from fineloop.data.hashing import content_hash
from fineloop.data.records import ProjectData
from fineloop.data.snapshot_io import save_splits, save_table
from fineloop.data.splits import SPLITS, QueryGroups, assign_splits
from fineloop.errors import Invalid
from fineloop.tasks.base import BuiltSnapshot
from fineloop.tasks.embedding.config import packaged_minilm_path
from fineloop.tasks.embedding.examples import harvest, merge_positives
from fineloop.tasks.embedding.generated import add_generated, mined_negatives, wanted
from fineloop.tasks.embedding.rows import assemble_rows
from fineloop.tasks.embedding.serving.persist import project_index_folder
from fineloop.tasks.embedding.synthetic import REAL_LINEAGE


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
    data: ProjectData,
    settings: Settings,
    out_dir: Path,
    *,
    seed: int,
    config: BuildConfig | None = None,
    model_path: str | None = None,
) -> BuiltSnapshot:
    """Write the project's snapshot under `out_dir` (which may exist, empty).

    `model_path` mines the negatives and judges generated queries (their round trip): the
    loop passes the current champion (else the base model); without it, the project's base
    model or the packaged default is used.
    """
    config = config or BuildConfig()
    found = harvest(data, max_query_chars=config.max_query_chars)
    corpus = [(item.item_id, item.text) for item in data.items]
    stats: Counter[str] = found.stats
    groups = QueryGroups()
    for signal in found.signals:
        groups.add(signal.query, signal.group)
    examples = sorted(merge_positives(found.signals), key=lambda e: (e.query, e.item_id))
    stats["positive_signals"] = sum(s.positive for s in found.signals)
    stats["examples"] = len(examples)
    require_examples(len(examples), config, data.project.name)
    split_of = assign_splits(
        {groups.key(e.query) for e in examples},
        seed=seed,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction,
    )
    texts = dict(corpus)
    mining = config.mine_negatives and config.negatives_per_query > 0
    if mining or wanted(data):
        model_path = model_path or data.project.base_model or packaged_minilm_path()
    vectors = project_index_folder(settings, data.project.name)  # serving's vectors
    rows = assemble_rows(
        examples,
        found.signals,
        groups,
        split_of,
        texts,
        mined_negatives(settings, config, model_path, examples, groups, texts, vectors),
        negatives_per_query=config.negatives_per_query,
        stats=stats,
    )
    rows, generated_config, recorded_config = add_generated(
        rows,
        data=data,
        settings=settings,
        config=config,
        examples=examples,
        signals=found.signals,
        texts=texts,
        model_path=model_path,
        vectors=vectors,
        seed=seed,
        stats=stats,
    )
    hashed_config = {**config.model_dump(mode="json"), "seed": seed, **generated_config}
    # Real rows are hashed without their (constant) lineage columns: with generated rows
    # off, a snapshot keeps the id it had before they existed.
    snapshot_id = content_hash(
        {"project": data.project.name, "config": hashed_config, "rows": rows, "corpus": corpus}
    )
    rows = [row if "synthetic" in row else {**row, **REAL_LINEAGE} for row in rows]
    for name in SPLITS:
        stats[f"groups_{name}"] = sum(1 for s in split_of.values() if s == name)
    full_stats: dict[str, Any] = {
        **dict(sorted(stats.items())),
        "decay_as_of": found.as_of.isoformat() if found.as_of else None,
    }
    full_config = {
        **hashed_config,
        **recorded_config,
        "mining_model": model_path if mining else None,
    }
    splits = save_splits(out_dir / "pairs", rows, pair_features())
    save_table(
        out_dir / "corpus",
        {"id": [i for i, _ in corpus], "text": [t for _, t in corpus]},
        {"id": Value("string"), "text": Value("string")},
    )
    return BuiltSnapshot.publish(
        out_dir,
        id=snapshot_id,
        project=data.project.name,
        task="embedding",
        config=full_config,
        splits=splits,
        stats=full_stats,
        feedback_watermark=found.watermark,
    )


def count_examples(data: ProjectData, config: BuildConfig) -> int:
    """How many (query, item) examples `build_snapshot` would make, without building."""
    found = harvest(data, max_query_chars=config.max_query_chars)
    return sum(1 for _ in merge_positives(found.signals))


def require_examples(have: int, config: BuildConfig, project: str) -> None:
    if have < config.min_examples:
        raise Invalid(
            f"training needs at least {config.min_examples} (query, item) examples; project "
            f"{project!r} has {have} — send more selections or labels",
            field="feedback",
        )


def pair_features() -> dict[str, Any]:
    """The columns of a snapshot's `pairs/` splits (train and evaluate read these)."""
    from datasets import List

    return {
        "anchor": Value("string"),
        "positive": Value("string"),
        "positive_id": Value("string"),
        "negatives": List(Value("string")),
        "negative_ids": List(Value("string")),
        "query_group": Value("string"),
        "feedback_ids": List(Value("int64")),
        "score": Value("float64"),
        "label": Value("int64"),
        # lineage: False/"" for rows from feedback; synthetic rows name their generator and
        # the hash of the prompt (whose text is in snapshot.json's config)
        "synthetic": Value("bool"),
        "generator": Value("string"),
        "prompt_hash": Value("string"),
    }
