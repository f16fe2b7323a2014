"""Typed records a task builds from: interactions with what was shown, the feedback on them
with its effective reward, and the catalog. Each keeps its store id for lineage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fineloop.feedback.rewards import RewardPolicy
from fineloop.store.interactions import shown_item_ids


@dataclass(frozen=True)
class ProjectInfo:
    name: str
    task: str
    base_model: str | None
    reward_policy: RewardPolicy
    # The project's training overrides (training_policy.train), so a builder can honour
    # the ones that shape data, such as the primary metric its snapshot is judged by.
    train: Mapping[str, Any] = field(default_factory=dict)
    # The project's task options as its task validated them (NER: entity types).
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShownInteraction:
    """One model call as the application logged it: its input, what it showed, and which
    version (and rollout variant) served it."""

    id: str
    input: Any
    output: Any
    model_version: str | None
    variant: str | None
    user_id: str | None
    metadata: dict[str, Any]
    created_at: datetime

    @property
    def shown_item_ids(self) -> list[str] | None:
        """Item ids a ranking output showed, in rank order; None when it is no ranking."""
        return shown_item_ids(self.output)


@dataclass(frozen=True)
class FeedbackRecord:
    """One feedback event. `effective_reward` is the stored reward with decay applied as
    of the newest event read (not the wall clock, so rebuilding gives the same data);
    `trainable` says whether the project's quality threshold lets it into training."""

    id: int
    kind: str
    payload: dict[str, Any]
    input: Any
    user_id: str | None
    timestamp: datetime
    reward: float
    effective_reward: float
    trainable: bool
    metadata: dict[str, Any]
    interaction_id: str | None
    interaction: ShownInteraction | None

    def model_input(self) -> Any:
        """The input the feedback judges: the event's own, else its interaction's."""
        if self.input is not None:
            return self.input
        return self.interaction.input if self.interaction is not None else None


@dataclass(frozen=True)
class CatalogItem:
    item_id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ProjectData:
    """A consistent read of a project: every feedback event up to `watermark` (the largest
    id read), in id order, and the catalog sorted by item id."""

    project: ProjectInfo
    feedback: tuple[FeedbackRecord, ...]
    items: tuple[CatalogItem, ...]
    watermark: int
    as_of: datetime | None  # the newest feedback timestamp: the reference time for decay
    # Every interaction the feedback refers to by id (a preference's chosen and rejected
    # sides too), so a builder can resolve ids that are not a record's own interaction.
    interactions: Mapping[str, ShownInteraction] = field(default_factory=dict)

    def item_ids(self) -> set[str]:
        return {item.item_id for item in self.items}
