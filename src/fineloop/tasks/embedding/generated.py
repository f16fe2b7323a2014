"""Rows a generation model adds to a snapshot's train split: paraphrases of real queries
(augment.py, `train.augmentation`) and queries for items without feedback (synthetic.py,
`train.synthetic_queries`). Both are off by default and read from the project's training
policy. Each kind is capped at its `share` of the train split, counted against the real
train rows; their negatives are mined as for real rows; they never enter validation or
test. What they add to the snapshot's config is part of its id only when they are on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fineloop.artifacts import fetch
from fineloop.config import Settings
from fineloop.data.records import ProjectData
from fineloop.data.splits import SPLITS, QueryGroups, normalize_query
from fineloop.tasks.embedding.augment import paraphrase, project_augmentation
from fineloop.tasks.embedding.examples import Example, Signal
from fineloop.tasks.embedding.mining import mine_item_negatives
from fineloop.tasks.embedding.rows import assemble_rows
from fineloop.tasks.embedding.synthetic import SYNTHETIC_GROUP, project_config, synthesize

if TYPE_CHECKING:
    from fineloop.tasks.embedding.build import BuildConfig

Row = dict[str, Any]


def wanted(data: ProjectData) -> bool:
    """Whether the project's policy turns on any generated rows (they need a model)."""
    return project_config(data).enabled or project_augmentation(data).enabled


def mined_negatives(
    settings: Settings,
    config: BuildConfig,
    model_path: str | None,
    examples: Sequence[Example],
    groups: QueryGroups,
    texts: Mapping[str, str],
    vectors: Path,
) -> dict[str, list[str]]:
    """Mined negative item ids per query, or none when the build does not mine."""
    if not (config.mine_negatives and config.negatives_per_query > 0) or not examples:
        return {}
    assert model_path is not None
    return mine_item_negatives(
        fetch(settings, model_path),  # a version on a URL root: its local copy
        examples,
        groups,
        texts,
        num_negatives=config.negatives_per_query,
        margin=config.margin,
        range_min=config.range_min,
        range_max=config.range_max,
        vectors=vectors,
    )


def room(real_train: int, share: float) -> int:
    """How many generated rows keep them at most `share` of the train split."""
    return int(share * real_train / (1 - share) + 1e-9)  # share <= 0.9 (its config's bound)


def add_generated(
    rows: list[Row],
    *,
    data: ProjectData,
    settings: Settings,
    config: BuildConfig,
    examples: Sequence[Example],
    signals: Sequence[Signal],
    texts: Mapping[str, str],
    model_path: str | None,
    vectors: Path,
    seed: int,
    stats: Counter[str],
) -> tuple[list[Row], dict[str, Any], dict[str, Any]]:
    """`rows` plus the generated ones, in canonical order; with what goes into the
    snapshot's hashed config and what only into its recorded config."""
    synthetic, augmentation = project_config(data), project_augmentation(data)
    hashed: dict[str, Any] = {}
    recorded: dict[str, Any] = {}
    if not (synthetic.enabled or augmentation.enabled):
        return rows, hashed, recorded
    assert model_path is not None
    local = fetch(settings, model_path)
    user_queries = {normalize_query(s.query) for s in signals}
    real_train = sum(1 for row in rows if row["split"] == "train")
    added: list[Row] = []
    common: dict[str, Any] = {
        "texts": texts,
        "user_queries": user_queries,
        "model_path": local,
        "vectors": vectors,
        "seed": seed,
        "max_query_chars": config.max_query_chars,
        "stats": stats,
    }
    if augmentation.enabled:
        para = paraphrase(
            data,
            settings,
            augmentation,
            rows=rows,
            max_examples=room(real_train, augmentation.share),
            **common,
        )
        added += _rows(
            para.examples,
            para.lineage(),
            lambda row: para.groups[row["anchor"], row["positive_id"]],
            settings,
            config,
            model_path,
            texts,
            vectors,
        )
        stats["augment_rows"] = len(para.examples)
        hashed["augmentation"] = augmentation.model_dump(mode="json")
        recorded["augmentation_generator_identity"] = para.generator_identity
    if synthetic.enabled:
        made = synthesize(
            data,
            settings,
            synthetic,
            examples=examples,
            max_examples=room(real_train, synthetic.share),
            **common,
        )
        added += _rows(
            made.examples,
            made.lineage(),
            lambda row: SYNTHETIC_GROUP + row["query_group"],
            settings,
            config,
            model_path,
            texts,
            vectors,
        )
        stats["synthetic_rows"] = len(made.examples)
        hashed["synthetic_queries"] = synthetic.model_dump(mode="json")
        recorded["synthetic_generator_identity"] = made.generator_identity
    merged = rows + added
    merged.sort(
        key=lambda r: (SPLITS.index(r["split"]), r["query_group"], r["anchor"], r["positive_id"])
    )
    return merged, hashed, recorded


def _rows(
    examples: list[Example],
    lineage: Mapping[str, Any],
    group_of: Callable[[Row], str],
    settings: Settings,
    config: BuildConfig,
    model_path: str,
    texts: Mapping[str, str],
    vectors: Path,
) -> list[Row]:
    """A train row per generated example, negatives mined as for real rows; `group_of`
    names each row's query group."""
    groups = QueryGroups()
    for example in examples:
        groups.add(example.query, None)
    split_of = {groups.key(e.query): "train" for e in examples}
    mined = mined_negatives(settings, config, model_path, examples, groups, texts, vectors)
    made = assemble_rows(
        examples,
        [],
        groups,
        split_of,
        dict(texts),
        mined,
        negatives_per_query=config.negatives_per_query,
        stats=Counter(),
    )
    for row in made:
        row.update(lineage, query_group=group_of(row))
    return made
