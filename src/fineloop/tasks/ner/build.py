"""The NER dataset builder: a project's labels and corrections → one row per text, split
by document, on disk.

Layout written under `out_dir` (read by train and evaluate):
- `examples/`: train, validation and test (each possibly empty but train), one row per text:
  `text`, `spans` ([{"start", "end", "label"}], sorted, possibly empty), `document` (the
  split unit), `feedback_ids` (lineage);
- `snapshot.json`: config (`entity_types`, `labelling`, the split fractions, seed), stats.

The mapping: a label event gives a text's spans; a correction gives them resolved against
what its interaction showed (`spans.resolve`). The newest event of a text wins (by
timestamp, then id), so a later correction replaces an earlier label; `feedback_ids` lists
every label and correction of the text, the replaced ones too (deleting any changes the
row). Thumbs, ratings and events below the quality threshold train nothing. A winner whose
spans no longer fit the project (a type removed) is dropped, and counted under its reason.

The split is by document (`spans.document_of`: the input's `document`, else the text's
hash) with the shared seeded assignment, so a document never straddles two splits and keeps
its split as feedback grows; train is never empty. The id hashes the project, the config and
every row with its split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fineloop.config import Settings
from fineloop.data.hashing import content_hash
from fineloop.data.records import FeedbackRecord, ProjectData
from fineloop.data.snapshot_io import save_splits
from fineloop.data.splits import SPLITS, assign_splits
from fineloop.errors import Invalid, error_message, field_path
from fineloop.tasks.base import BuiltSnapshot
from fineloop.tasks.ner.options import NerOptions, parse_options
from fineloop.tasks.ner.spans import (
    MAX_TEXT_CHARS,
    Span,
    check_spans,
    document_of,
    parse_correction,
    resolve,
    spans_of,
    text_of,
)

TASK = "ner"
EXAMPLES = "examples"  # the splits' folder; train_data.py reads the same name
USED_KINDS = frozenset({"label", "correction"})
Row = dict[str, Any]


class NerBuildConfig(BaseModel):
    """How much is held out, and the least data worth training on."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    validation_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of documents held out for validation."
    )
    test_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Share of documents held out for the test."
    )
    min_texts: int = Field(
        default=4,
        ge=1,
        description="Fewer texts with a span set than this is an error: nothing worth "
        "training on yet.",
    )

    @model_validator(mode="after")
    def _room_for_train(self) -> NerBuildConfig:
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must leave room for train")
        return self


@dataclass
class _Candidate:
    record: FeedbackRecord
    spans: list[Span]
    document: str


@dataclass
class Harvest:
    """Rows (one per text, sorted by document then text) and what was left out, and why:
    per event (no text, unresolvable...) or per text (its newest spans no longer fit)."""

    rows: list[Row] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    used: Counter[str] = field(default_factory=Counter)  # events that made a row, by kind
    superseded: int = 0  # events replaced by a newer one on the same text


def build_snapshot(
    data: ProjectData,
    settings: Settings,
    out_dir: Path,
    *,
    seed: int,
    config: NerBuildConfig | Mapping[str, Any] | None = None,
    **options: Any,
) -> BuiltSnapshot:
    """Write the project's snapshot under `out_dir` (which may exist, empty). `config`,
    or its fields as keyword `options`, set the split; `settings` is part of the task
    contract and unused here (nothing is mined with a model)."""
    build = _config(config, options)
    ner = parse_options(data.project.options)
    found = harvest(data, ner)
    _require(found, build, data.project.name)
    split_of = assign_splits(
        {row["document"] for row in found.rows},
        seed=seed,
        validation_fraction=build.validation_fraction,
        test_fraction=build.test_fraction,
    )
    for row in found.rows:
        row["split"] = split_of[row["document"]]
    hashed_config = {
        "entity_types": list(ner.entity_types),
        "labelling": ner.labelling,
        **build.model_dump(mode="json"),
        "seed": seed,
    }
    snapshot_id = content_hash(
        {"project": data.project.name, "config": hashed_config, "rows": found.rows}
    )
    splits = save_splits(out_dir / EXAMPLES, found.rows, row_features())
    return BuiltSnapshot.publish(
        out_dir,
        id=snapshot_id,
        project=data.project.name,
        task=TASK,
        config=hashed_config,
        splits=splits,
        stats=_stats(data, ner, found, split_of),
        feedback_watermark=data.watermark,
    )


def require_examples(data: ProjectData, config: NerBuildConfig | None = None) -> None:
    """Raise `Invalid` when the project has too few texts with spans to train on, saying
    how many it has and what counts."""
    found = harvest(data, parse_options(data.project.options))
    _require(found, config or NerBuildConfig(), data.project.name)


def harvest(data: ProjectData, options: NerOptions) -> Harvest:
    """The project's label and correction events → one row per text (newest wins)."""
    found = Harvest()
    by_text: dict[str, list[_Candidate]] = {}
    for record in data.feedback:
        candidate = _candidate(record, found.dropped)
        if candidate is not None:
            text = text_of(record.model_input())
            assert text is not None  # _candidate checked it
            by_text.setdefault(text, []).append(candidate)
    for text, candidates in by_text.items():
        newest = max(candidates, key=lambda c: (c.record.timestamp, c.record.id))
        found.superseded += len(candidates) - 1
        problems = check_spans(newest.spans, text, options.entity_types)
        if problems:
            found.dropped[_reason(problems[0][0])] += 1
            continue
        found.used[newest.record.kind] += 1
        found.rows.append(
            {
                "text": text,
                "spans": [s.as_dict() for s in newest.spans],
                "document": newest.document,
                "feedback_ids": sorted(c.record.id for c in candidates),
            }
        )
    found.rows.sort(key=lambda row: (row["document"], row["text"]))
    return found


def _candidate(record: FeedbackRecord, dropped: Counter[str]) -> _Candidate | None:
    """The span set one event gives its text, or None with the reason counted."""
    if record.kind not in USED_KINDS:
        dropped["kind_not_used"] += 1
        return None
    if not record.trainable:
        dropped["below_quality_threshold"] += 1
        return None
    value = record.model_input()
    text = text_of(value)
    if text is None or not text.strip():
        dropped["no_text"] += 1
        return None
    if len(text) > MAX_TEXT_CHARS:
        dropped["text_too_long"] += 1
        return None
    spans = _label_spans(record) if record.kind == "label" else _corrected(record)
    if isinstance(spans, str):
        dropped[spans] += 1
        return None
    return _Candidate(record, spans, document_of(value, text))


def _label_spans(record: FeedbackRecord) -> list[Span] | str:
    raw = record.payload.get("spans")
    if not isinstance(raw, list):
        return "label_without_spans"
    return spans_of({"spans": raw})


def _corrected(record: FeedbackRecord) -> list[Span] | str:
    """A correction resolved against its interaction's shown spans, or why it cannot be."""
    parsed = parse_correction(record.payload.get("output"))
    if isinstance(parsed, list):
        return "malformed_correction"
    if parsed.edits is not None and record.interaction is None:
        return "edits_without_interaction"
    shown = spans_of(record.interaction.output) if record.interaction is not None else []
    try:
        return resolve(shown, parsed)
    except ValueError:
        return "edit_of_unshown_span"


def _reason(problem_field: str) -> str:
    """A `check_spans` problem's field as a stats reason."""
    if problem_field.endswith(".label"):
        return "undeclared_type"
    if problem_field.endswith(".end"):
        return "span_past_text"
    if problem_field == "spans":
        return "overlapping_spans"
    return "whitespace_span"


def _require(found: Harvest, config: NerBuildConfig, project: str) -> None:
    have = len(found.rows)
    left_out = ", ".join(f"{n} {reason}" for reason, n in sorted(found.dropped.items()))
    note = f" (left out: {left_out})" if left_out else ""
    if have < config.min_texts:
        raise Invalid(
            f"training needs at least {config.min_texts} texts with their entity spans; "
            f"project {project!r} has {have}{note}. What counts: a label event with the "
            "text as input and its spans ([] when it has none), or a correction of extracted "
            "spans; or import a CoNLL or spans-jsonl file",
            field="feedback",
        )
    if not any(row["spans"] for row in found.rows):
        raise Invalid(
            f"none of project {project!r}'s {have} labelled texts has an entity: label "
            "some texts that do, so the model has something to learn",
            field="feedback",
        )


def _stats(
    data: ProjectData, options: NerOptions, found: Harvest, split_of: Mapping[str, str]
) -> dict[str, Any]:
    texts = dict.fromkeys(SPLITS, 0)
    without = dict.fromkeys(SPLITS, 0)
    types = options.entity_types
    per_type: dict[str, dict[str, int]] = {s: dict.fromkeys(types, 0) for s in SPLITS}
    for row in found.rows:
        split = row["split"]
        texts[split] += 1
        without[split] += not row["spans"]
        for span in row["spans"]:
            per_type[split][span["label"]] += 1
    return {
        "texts": texts,
        "documents": {s: sum(1 for v in split_of.values() if v == s) for s in SPLITS},
        "spans_per_type": per_type,
        "texts_without_entities": without,
        "dropped": dict(sorted(found.dropped.items())),
        "superseded": found.superseded,
        "records_used": dict(sorted(found.used.items())),
        "records": len(data.feedback),
    }


def row_features() -> dict[str, Any]:
    """The columns of every split (train and evaluate read these)."""
    from datasets import List, Value  # type: ignore[import-untyped]

    span = {"start": Value("int64"), "end": Value("int64"), "label": Value("string")}
    return {
        "text": Value("string"),
        "spans": List(span),
        "document": Value("string"),
        "feedback_ids": List(Value("int64")),
    }


def _config(
    given: NerBuildConfig | Mapping[str, Any] | None, extra: Mapping[str, Any]
) -> NerBuildConfig:
    """The builder's settings from a config, a mapping and/or keywords; `Invalid` names
    the field."""
    base = given.model_dump() if isinstance(given, NerBuildConfig) else dict(given or {})
    try:
        return NerBuildConfig.model_validate({**base, **extra})
    except ValidationError as error:
        first = error.errors()[0]
        where = field_path(first["loc"], first["type"]) or "config"
        raise Invalid(error_message(first), field=where) from None
