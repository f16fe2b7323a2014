"""The generation dataset builder: a project's feedback → SFT, DPO and KTO splits on disk.

Layout written under `out_dir` (read by train and evaluate), in TRL's conversational format:
- `sft/`: `prompt` (the messages up to the reply), `completion` (one assistant message);
- `dpo/`: `prompt`, `chosen`, `rejected` (each side one assistant message);
- `kto/`: `prompt`, `completion`, `label` (True: desirable);
- every row also has `prompt_key` (its split group) and `feedback_ids` (lineage);
- `snapshot.json`: id, project, task, config, `counts` per method and split, `methods`
  (those with train rows, in the order sft, dpo, kto), `primary_metric`, stats (with the
  reason for every drop), watermark, fineloop version.

Each folder always holds train, validation and test, possibly empty. The split is by
`prompt_key`, over all three methods at once: a prompt never lands in two splits, so a DPO
test pair never asks what an SFT train row answers. The id is a sha256 over the project, the
config and seed, and every row with its split: the same feedback gives the same id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fineloop.config import Settings
from fineloop.data.hashing import content_hash
from fineloop.data.records import ProjectData
from fineloop.data.snapshot_io import save_splits
from fineloop.data.splits import SPLITS, assign_splits
from fineloop.errors import Invalid
from fineloop.tasks.base import BuiltSnapshot
from fineloop.tasks.generation.build_config import GenerationBuildConfig
from fineloop.tasks.generation.build_examples import Row, harvest

METHODS = ("sft", "dpo", "kto")

__all__ = [
    "METHODS",
    "GenerationBuildConfig",
    "build_snapshot",
    "count_examples",
    "method_features",
    "require_examples",
]


def build_snapshot(
    data: ProjectData,
    settings: Settings,
    out_dir: Path,
    *,
    seed: int,
    config: GenerationBuildConfig | None = None,
    model_path: str | None = None,
) -> BuiltSnapshot:
    """Write the project's snapshot under `out_dir` (which may exist, empty).

    `settings` and `model_path` are part of the task contract; this builder needs neither
    (it mines nothing with a model)."""
    config = config or GenerationBuildConfig()
    found = harvest(data, config)
    require_examples(found.total(), config, data.project.name)
    tables: dict[str, list[Row]] = {"sft": found.sft, "dpo": found.dpo, "kto": found.kto}
    split_of = assign_splits(
        {row["prompt_key"] for rows in tables.values() for row in rows},
        seed=seed,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction,
    )
    for rows in tables.values():
        for row in rows:
            row["split"] = split_of[row["prompt_key"]]
    hashed_config = {**config.model_dump(mode="json"), "seed": seed}
    snapshot_id = content_hash(
        {"project": data.project.name, "config": hashed_config, "rows": tables}
    )
    features = method_features()
    counts = {m: save_splits(out_dir / m, tables[m], features[m]) for m in METHODS}
    methods = [m for m in METHODS if counts[m]["train"] > 0]
    splits = {name: sum(counts[m][name] for m in METHODS) for name in SPLITS}
    stats: dict[str, Any] = {
        "examples": found.total(),
        "counts": counts,
        "dropped": dict(sorted(found.dropped.items())),
        "merged": dict(sorted(found.merged.items())),
        "records_used": dict(sorted(found.used.items())),
        "records": len(data.feedback),
        "prompt_groups": {n: sum(1 for s in split_of.values() if s == n) for n in SPLITS},
    }
    return BuiltSnapshot.publish(
        out_dir,
        id=snapshot_id,
        project=data.project.name,
        task="generation",
        config=hashed_config,
        splits=splits,
        stats=stats,
        feedback_watermark=data.watermark,
        counts=counts,
        methods=methods,
        primary_metric=config.primary_metric,
    )


def count_examples(data: ProjectData, config: GenerationBuildConfig) -> int:
    """How many rows (SFT, DPO and KTO together) `build_snapshot` would write."""
    return harvest(data, config).total()


def require_examples(have: int, config: GenerationBuildConfig, project: str) -> None:
    if have < config.min_examples:
        raise Invalid(
            f"training needs at least {config.min_examples} examples (SFT rows, preference "
            f"pairs and judged outputs together); project {project!r} has {have} — send "
            "thumbs or ratings on logged outputs, corrections or preferences, or import a "
            "chat file (format=chat)",
            field="feedback",
        )


def method_features() -> dict[str, dict[str, Any]]:
    """The columns of each method's splits (train and evaluate read these)."""
    from datasets import List, Value  # type: ignore[import-untyped]

    messages = List({"role": Value("string"), "content": Value("string")})
    common = {"prompt_key": Value("string"), "feedback_ids": List(Value("int64"))}
    return {
        "sft": {"prompt": messages, "completion": messages, **common},
        "dpo": {"prompt": messages, "chosen": messages, "rejected": messages, **common},
        "kto": {"prompt": messages, "completion": messages, "label": Value("bool"), **common},
    }
