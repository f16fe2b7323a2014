"""A NER project's task options: the entity types it declares, and how labels reach
sub-words. Plain data (no torch): the API validates them when a project is created."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fineloop.errors import Invalid, error_message, field_path

EntityType = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$",
        description="A letter, then letters, digits, '_', '.' or '-'; at most 32 characters.",
    ),
]
MAX_TYPES = 64


class NerOptions(BaseModel):
    """What a NER project finds, fixed per project (a model's head has one output per tag)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    entity_types: list[EntityType] = Field(
        min_length=1,
        max_length=MAX_TYPES,
        description="The entity types the model finds, e.g. ['EQUIPMENT', 'MEASURE'].",
    )
    labelling: Literal["first", "all"] = Field(
        default="first",
        description="Which sub-words of a word carry its tag in training: the first only "
        "(the others are ignored by the loss) or all of them.",
    )

    @field_validator("entity_types")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        seen = {t.upper() for t in value}
        if len(seen) != len(value):
            raise ValueError("entity types must be unique (case-insensitively)")
        if "O" in seen:
            raise ValueError("'O' is the outside tag, not an entity type")
        return value

    def tags(self) -> list[str]:
        """The BIO tag set, in the head's order: O, then B-/I- per type."""
        return ["O"] + [f"{p}-{t}" for t in self.entity_types for p in ("B", "I")]


def parse_options(raw: Mapping[str, Any]) -> NerOptions:
    """The options, or `Invalid` naming the field to fix."""
    if not raw:
        raise Invalid(
            "a NER project needs task_options.entity_types, e.g. "
            '{"entity_types": ["EQUIPMENT", "MEASURE"]}',
            field="task_options.entity_types",
        )
    try:
        return NerOptions.model_validate(dict(raw))
    except ValidationError as error:
        first = error.errors()[0]
        where = field_path(first["loc"], first["type"])
        field = f"task_options.{where}" if where else "task_options"
        raise Invalid(error_message(first), field=field) from None
