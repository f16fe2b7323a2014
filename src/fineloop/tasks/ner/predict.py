"""`NerPredictor`: character spans from a token-classification folder.

The tokenizer and model load once. `extract` windows every text (a text longer than
`max_length` tokens is read in overlapping windows, so an entity past the first window is
still found), runs the windows in batches of at most `batch_size`, and turns the tag
probabilities back into spans (`align.word_probabilities`, `align.decode_spans`).

Thread-safety: serving calls `extract` from several threads; a fast tokenizer's padding
and truncation settings are shared state, so one lock covers tokenizing and the forward
pass (the forward pass is most of the time anyway).

Precision: float32 on a CPU, bf16 on a GPU that has it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoTokenizer

from fineloop.errors import Invalid
from fineloop.runtime import bf16_supported, device
from fineloop.tasks.ner.align import (
    decode_spans,
    require_fast,
    tokenize,
    windows_by_text,
    word_probabilities,
)
from fineloop.tasks.ner.train_model import tags_of, window_length
from fineloop.threads import limit_threads

if TYPE_CHECKING:
    from fineloop.config import Settings

BATCH_SIZE = 16  # windows per forward pass
MAX_LENGTH = 512  # tokens per window, capped by the model's own limit
# Texts tokenized and held at once: an evaluation of 10,000 texts keeps the probabilities
# of this many texts' windows in memory, not of all of them.
CHUNK_TEXTS = 256


def load_model(path: str, tags: Sequence[str] | None, where: str) -> Any:
    """The token classifier at `path`. With `tags` that its head does not have (a base
    model, scored before any training), a fresh head for them, seeded so that scoring the
    same base twice gives the same numbers."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    dtype = torch.bfloat16 if where == "cuda" and bf16_supported("cuda") else None
    if tags is None or tags_of(AutoConfig.from_pretrained(path)) == list(tags):
        model = AutoModelForTokenClassification.from_pretrained(path, dtype=dtype)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForTokenClassification.from_pretrained(
                path,
                dtype=dtype,
                num_labels=len(tags),
                id2label=dict(enumerate(tags)),
                label2id={t: i for i, t in enumerate(tags)},
                ignore_mismatched_sizes=True,
            )
    return model.to(where)


class NerPredictor:
    """A NER model ready to answer; `extract` is thread-safe. `tags`: score a model whose
    head lacks them (a base) with a fresh, seeded head for them (evaluation only)."""

    def __init__(
        self,
        model_path: str,
        *,
        tags: Sequence[str] | None = None,
        batch_size: int = BATCH_SIZE,
        max_length: int = MAX_LENGTH,
    ) -> None:
        path = Path(model_path).expanduser()
        if not path.exists():
            raise Invalid(f"no model at {model_path}", field="model")
        self.model_path = str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        require_fast(self.tokenizer, model_path)
        self.device = device()
        self.model = load_model(self.model_path, tags, self.device).eval()
        self.tags = tags_of(self.model.config)
        if not any(t.startswith("B-") for t in self.tags):
            raise Invalid(
                f"{model_path} is not a NER model: its labels are {', '.join(self.tags)}",
                field="model",
            )
        self.batch_size = max(1, batch_size)
        self.max_length = window_length(self.tokenizer, self.model, max_length)
        self.threads: int | None = None
        self._lock = threading.Lock()

    @property
    def entity_types(self) -> list[str]:
        """The types the model finds, in its head's order."""
        return [t[2:] for t in self.tags if t.startswith("B-")]

    def prepare_for_serving(self, settings: Settings) -> None:
        """The task contract's warm-up: the serving thread cap, then one short text."""
        self.threads = settings.serving_threads
        self.extract(["Warm up the model."])

    def extract(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        """Each text's spans: {"start", "end", "label", "score", "text"}, character
        offsets (end exclusive), sorted and never overlapping."""
        texts = list(texts)
        if not texts:
            return []
        with self._lock:
            limit_threads(self.threads)
            return self._extract(texts)

    def _extract(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        found: list[list[dict[str, Any]]] = []
        for first in range(0, len(texts), CHUNK_TEXTS):
            found += self._extract_chunk(texts[first : first + CHUNK_TEXTS])
        return found

    def _extract_chunk(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        encoding = tokenize(self.tokenizer, texts, self.max_length)
        probs = self._probabilities(encoding)
        found = []
        for text, windows in zip(texts, windows_by_text(encoding, len(texts)), strict=True):
            words, word_probs = word_probabilities(encoding, windows, [probs[w] for w in windows])
            found.append(decode_spans(text, words, word_probs, self.tags) if words else [])
        return found

    def _probabilities(self, encoding: Any) -> list[Any]:
        """Per window, its (tokens x tags) probabilities as a numpy array."""
        import torch

        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoding]
        count = len(encoding["input_ids"])
        out: list[Any] = []
        with torch.inference_mode():
            for first in range(0, count, self.batch_size):
                batch = [
                    {k: encoding[k][i] for k in keys}
                    for i in range(first, min(first + self.batch_size, count))
                ]
                padded = self.tokenizer.pad(batch, return_tensors="pt")
                inputs = {k: v.to(self.device) for k, v in padded.items()}
                logits = self.model(**inputs).logits.float()
                probs = logits.softmax(dim=-1).cpu().numpy()
                left = self.tokenizer.padding_side == "left"
                for row, item in zip(probs, batch, strict=True):
                    size = len(item["input_ids"])
                    out.append(row[-size:] if left else row[:size])
        return out
