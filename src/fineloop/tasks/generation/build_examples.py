"""Feedback records → deduplicated SFT, DPO and KTO rows, with the reason for every drop.

The mapping, per record (resolved against the interaction it judges):
- correction: an SFT row (prompt, corrected text), and a DPO pair corrected ≻ shown when
  the shown output is known and differs;
- preference: a DPO pair; each side inline (`chosen`/`rejected`) or an interaction's output
  (`chosen_interaction_id`/`rejected_interaction_id`); the prompt is the event's `input`,
  else the chosen interaction's, else the event's own interaction's;
- thumb, rating: a judgment of the shown output. All judgments of one (prompt, output) are
  averaged: a KTO row, desirable when the mean effective reward is above the neutral 0,
  and an SFT row too when the mean reaches the project's quality threshold (good outputs
  teach by example). A mean of exactly 0 (one up, one down) teaches nothing: dropped.
Records below the quality threshold, and selections and labels (no use here), are dropped.
Rows equal in prompt and texts are merged, their `feedback_ids` joined.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fineloop.data.hashing import content_hash
from fineloop.data.records import FeedbackRecord, ProjectData, ShownInteraction
from fineloop.tasks.generation.build_config import GenerationBuildConfig
from fineloop.tasks.generation.prompts import (
    Message,
    output_text,
    prompt_chars,
    prompt_key,
    prompt_messages,
    reply,
)

Row = dict[str, Any]
USED_KINDS = frozenset({"correction", "preference", "thumb", "rating"})


@dataclass
class _Judged:
    """Every thumb and rating on one (prompt, output)."""

    prompt: list[Message]
    completion: str
    rewards: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


@dataclass
class Harvest:
    """The rows of each method (unsplit, in a fixed order) and what was dropped, and why."""

    sft: list[Row]
    dpo: list[Row]
    kto: list[Row]
    dropped: Counter[str]
    merged: Counter[str]
    used: Counter[str]  # records that gave at least one row, by kind

    def total(self) -> int:
        return len(self.sft) + len(self.dpo) + len(self.kto)


class _Collector:
    def __init__(self, data: ProjectData, config: GenerationBuildConfig) -> None:
        self.data = data
        self.config = config
        self.sft: dict[str, Row] = {}
        self.dpo: dict[str, Row] = {}
        self.judged: dict[str, _Judged] = {}
        self.dropped: Counter[str] = Counter()
        self.merged: Counter[str] = Counter()
        self.used: Counter[str] = Counter()

    def record(self, record: FeedbackRecord) -> None:
        if record.kind not in USED_KINDS:
            self.dropped["kind_not_used"] += 1
        elif not record.trainable:
            self.dropped["below_quality_threshold"] += 1
        elif record.kind == "correction":
            self._correction(record)
        elif record.kind == "preference":
            self._preference(record)
        else:
            self._judgment(record)

    def _prompt(self, value: Any) -> list[Message] | None:
        messages = prompt_messages(value)
        if messages is None:
            self.dropped["no_prompt"] += 1
        elif prompt_chars(messages) > self.config.max_prompt_chars:
            self.dropped["prompt_too_long"] += 1
            return None
        return messages

    def _text(self, value: Any) -> str | None:
        text = output_text(value)
        if text is None:
            self.dropped["no_output"] += 1
            return None
        text = text.strip()
        if not text:
            self.dropped["empty_text"] += 1
            return None
        if len(text) > self.config.max_completion_chars:
            self.dropped["completion_too_long"] += 1
            return None
        return text

    def _correction(self, record: FeedbackRecord) -> None:
        prompt = self._prompt(record.model_input())
        corrected = self._text(record.payload.get("output")) if prompt else None
        if prompt is None or corrected is None:
            return
        self.used["correction"] += 1
        self._add_sft(prompt, corrected, [record.id])
        shown = output_text(record.interaction.output) if record.interaction else None
        if shown is None or not shown.strip():
            return  # nothing shown to prefer the correction over
        shown = shown.strip()
        if shown == corrected:
            self.dropped["identical_sides"] += 1
        elif len(shown) > self.config.max_completion_chars:
            self.dropped["completion_too_long"] += 1
        else:
            self._add_dpo(prompt, corrected, shown, [record.id])

    def _side(self, record: FeedbackRecord, side: str) -> tuple[bool, Any]:
        """(found, output) of one preference side; found is False for an unknown id."""
        if side in record.payload:
            return True, record.payload[side]
        shown = self._interaction(record.payload.get(f"{side}_interaction_id"))
        return (shown is not None), (shown.output if shown else None)

    def _interaction(self, interaction_id: Any) -> ShownInteraction | None:
        if not isinstance(interaction_id, str):
            return None
        return self.data.interactions.get(interaction_id)

    def _preference(self, record: FeedbackRecord) -> None:
        chosen_shown = self._interaction(record.payload.get("chosen_interaction_id"))
        source = record.input
        if source is None and chosen_shown is not None:
            source = chosen_shown.input
        if source is None and record.interaction is not None:
            source = record.interaction.input
        (has_chosen, chosen_out), (has_rejected, rejected_out) = (
            self._side(record, "chosen"),
            self._side(record, "rejected"),
        )
        if not (has_chosen and has_rejected):
            self.dropped["unknown_interaction"] += 1
            return
        prompt = self._prompt(source)
        chosen = self._text(chosen_out) if prompt else None
        rejected = self._text(rejected_out) if chosen else None
        if prompt is None or chosen is None or rejected is None:
            return
        if chosen == rejected:
            self.dropped["identical_sides"] += 1
            return
        self.used["preference"] += 1
        self._add_dpo(prompt, chosen, rejected, [record.id])

    def _judgment(self, record: FeedbackRecord) -> None:
        if record.interaction is None:
            self.dropped["no_output"] += 1  # the event judged nothing that was shown
            return
        prompt = self._prompt(record.model_input())
        completion = self._text(record.interaction.output) if prompt else None
        if prompt is None or completion is None:
            return
        self.used[record.kind] += 1
        key = content_hash([prompt, completion])
        judged = self.judged.setdefault(key, _Judged(prompt, completion))
        judged.rewards.append(record.effective_reward)
        judged.ids.append(record.id)

    def _add_sft(self, prompt: list[Message], completion: str, ids: list[int]) -> None:
        row = {"prompt": prompt, "completion": reply(completion)}
        self._merge(self.sft, "sft", row, ids)

    def _add_dpo(self, prompt: list[Message], chosen: str, rejected: str, ids: list[int]) -> None:
        row = {"prompt": prompt, "chosen": reply(chosen), "rejected": reply(rejected)}
        self._merge(self.dpo, "dpo", row, ids)

    def _merge(self, rows: dict[str, Row], method: str, row: Row, ids: list[int]) -> None:
        key = content_hash(row)
        if key in rows:
            self.merged[method] += 1
            rows[key]["feedback_ids"] = sorted({*rows[key]["feedback_ids"], *ids})
            return
        rows[key] = {**row, "prompt_key": prompt_key(row["prompt"]), "feedback_ids": sorted(ids)}

    def kto_rows(self) -> list[Row]:
        """One row per judged output; the judged outputs good enough become SFT rows too."""
        rows: list[Row] = []
        threshold = self.data.project.reward_policy.quality_threshold
        for judged in self.judged.values():
            mean = sum(judged.rewards) / len(judged.rewards)
            if mean == 0:
                self.dropped["conflicting_judgments"] += 1
                continue
            if len(judged.ids) > 1:
                self.merged["kto"] += len(judged.ids) - 1
            rows.append(
                {
                    "prompt": judged.prompt,
                    "completion": reply(judged.completion),
                    "label": mean > 0,
                    "prompt_key": prompt_key(judged.prompt),
                    "feedback_ids": sorted(judged.ids),
                }
            )
            if mean >= threshold:
                self._add_sft(judged.prompt, judged.completion, judged.ids)
        return rows


def harvest(data: ProjectData, config: GenerationBuildConfig) -> Harvest:
    """Every usable row of the project, deduplicated, in a fixed order (by content)."""
    collector = _Collector(data, config)
    for record in data.feedback:
        collector.record(record)
    kto = collector.kto_rows()
    return Harvest(
        sft=_ordered(collector.sft.values()),
        dpo=_ordered(collector.dpo.values()),
        kto=_ordered(kto),
        dropped=collector.dropped,
        merged=collector.merged,
        used=collector.used,
    )


def _ordered(rows: Any) -> list[Row]:
    return sorted(rows, key=lambda row: (row["prompt_key"], content_hash(row)))
