"""What a generation request carries and what it answers, bounded at the edge.

Bounds are what keep one request's cost finite: characters are capped before anything is
tokenized (`MAX_INPUT_CHARS` over all messages), the number of turns is capped, and
`max_tokens` cannot exceed `MAX_TOKENS_LIMIT` (the predictor caps it further with its own
setting and the model's context).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from fineloop.validation import INPUT, Seed

MAX_INPUT_CHARS = 200_000  # all messages (or the prompt) together, before tokenizing
MAX_MESSAGES = 512
MAX_TOKENS_LIMIT = 4096
DEFAULT_MAX_TOKENS = 256
MAX_STOPS = 4
MAX_STOP_CHARS = 64

Role = Literal["system", "user", "assistant"]
ContextPolicy = Literal["truncate", "reject"]
FinishReason = Literal["stop", "length"]


class ChatMessage(BaseModel):
    """One turn of a conversation."""

    model_config = INPUT

    role: Role = Field(description="Who speaks: system, user or assistant.")
    content: str = Field(max_length=MAX_INPUT_CHARS, description="What they say.")


class GenerationInput(BaseModel):
    """A chat (`messages`) or a plain `prompt`, and how to sample the reply."""

    model_config = INPUT

    messages: list[ChatMessage] | None = Field(
        default=None,
        max_length=MAX_MESSAGES,
        description="The conversation so far; the model writes the next assistant turn.",
    )
    prompt: str | None = Field(
        default=None,
        max_length=MAX_INPUT_CHARS,
        description="A plain prompt: used as is by a model without a chat template, else "
        "sent as one user message.",
    )
    max_tokens: int = Field(
        default=DEFAULT_MAX_TOKENS,
        ge=1,
        le=MAX_TOKENS_LIMIT,
        description="Most tokens to generate (the server may cap it lower).",
    )
    temperature: float = Field(
        default=0.0, ge=0.0, le=2.0, description="0 is greedy (deterministic); higher samples."
    )
    top_p: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (with temperature > 0)."
    )
    stop: list[str] = Field(
        default_factory=list,
        max_length=MAX_STOPS,
        description=f"Up to {MAX_STOPS} strings (1 to {MAX_STOP_CHARS} characters) that end "
        "the reply; the reply never contains them.",
    )
    seed: Seed | None = Field(
        default=None, description="Makes sampling repeatable (with temperature > 0)."
    )
    context_policy: ContextPolicy | None = Field(
        default=None,
        description="When prompt + max_tokens exceed the model's context: truncate (drop "
        "the oldest turns, keep system messages and the latest turns) or reject; none = "
        "the server's default.",
    )

    @model_validator(mode="after")
    def _one_input(self) -> GenerationInput:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give either messages or prompt, not both or neither")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("messages must hold at least one message")
            total = sum(len(m.content) for m in self.messages)
            if total > MAX_INPUT_CHARS:
                raise ValueError(
                    f"messages hold {total} characters together; the limit is {MAX_INPUT_CHARS}"
                )
        for stop in self.stop:
            if not 1 <= len(stop) <= MAX_STOP_CHARS:
                raise ValueError(f"each stop string must be 1 to {MAX_STOP_CHARS} characters")
        return self


class GenerationOutput(BaseModel):
    """The reply and what it cost."""

    text: str = Field(description="The generated text, without stop strings or end token.")
    finish_reason: FinishReason = Field(
        description="stop: the model ended or a stop string was met; length: max_tokens ran out."
    )
    prompt_tokens: int = Field(description="Tokens of the prompt the model read.")
    completion_tokens: int = Field(description="Tokens generated.")
    truncated: bool = Field(
        default=False, description="Whether older turns were dropped to fit the context."
    )
