"""Queries written by a generation model for catalog items, cached per item content.

`QueryWriter` loads the generator (a causal-LM folder: by default the packaged SmolLM2,
prepared once by the generation family) and writes queries for a batch of item texts with
`transformers`' `generate`: a plain completion of the prompt by default (through the
tokenizer's chat template when configured), sampling seeded by the batch's items, stopping
at a new line; each answer is cut to its first line, up to its first question mark.
`QueryCache` keeps what was written in an append-only JSON-lines file under the data dir,
one line per item, keyed by a hash of the item's text, the generator's identity (a digest
of its files), the prompt and the generation settings. A build appends after every batch,
so a killed build resumes where it stopped, and a second build over unchanged items
generates nothing.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineloop.artifacts import fetch
from fineloop.config import Settings
from fineloop.data.hashing import content_hash
from fineloop.data.splits import normalize_query
from fineloop.errors import Invalid
from fineloop.tasks.embedding.config import SyntheticQueriesConfig
from fineloop.tasks.embedding.serving.persist import model_identity
from fineloop.tasks.generation.prepare import (
    DEFAULT_GENERATION_MODEL,
    PREPARABLE,
    prepare_model,
)

logger = logging.getLogger(__name__)

FIELD = "train.synthetic_queries.generator"
# "Query:", "Search query -", "The user would type:": a lead-in naming what follows
_LABEL = re.compile(
    r"^[^:\n]{0,30}\b(query|question|type|types|search)\b[^:\n]{0,10}\s*[:\-]\s*", re.I
)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"  # straight and curly quotes


@dataclass(frozen=True)
class Generator:
    """The generation model as configured (`name`, recorded on each row), where its folder
    is, and a digest of what it computes with (part of every cache key)."""

    name: str
    path: Path
    identity: str


def resolve_generator(config: SyntheticQueriesConfig, settings: Settings) -> Generator:
    """The configured generator's folder: a preparable name is prepared on first use."""
    name = config.generator or DEFAULT_GENERATION_MODEL
    path = prepare_model(name, settings) if name in PREPARABLE else Path(fetch(settings, name))
    identity = model_identity(path, None) if (path / "config.json").is_file() else None
    if identity is None:
        raise Invalid(f"{FIELD}: {name!r} is not a causal-LM folder (no config.json)", field=FIELD)
    return Generator(name, path, identity)


def cache_key(text: str, generator: Generator, config: SyntheticQueriesConfig) -> str:
    """What the queries for one item text depend on."""
    return content_hash(
        {
            "text": text[: config.max_item_chars],
            "generator": generator.identity,
            "prompt": config.prompt,
            "queries_per_item": config.queries_per_item,
            "max_new_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "chat_template": config.chat_template,
        }
    )


def cache_file(settings: Settings, project: str) -> Path:
    return settings.data_dir / "synthetic_queries" / project / "queries.jsonl"


class QueryCache:
    """Item key → the queries written for it, in an append-only JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[str]] = {}
        if path.is_file():
            # a line cut inside a character decodes with a replacement, then fails as JSON
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[str(entry["key"])] = [str(q) for q in entry["queries"]]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a killed build: that item is written again

    def add(self, written: dict[str, list[str]]) -> None:
        """Append entries at once (one write), starting on a fresh line."""
        self.entries.update(written)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps({"key": k, "queries": v}, ensure_ascii=False) + "\n"
            for k, v in written.items()
        )
        from filelock import FileLock

        with FileLock(str(self.path.with_name(f".{self.path.name}.lock"))):  # two builds
            if self.path.is_file() and self.path.stat().st_size:
                with self.path.open("rb") as handle:
                    handle.seek(-1, 2)
                    if handle.read(1) != b"\n":  # a line cut short: start after it
                        lines = "\n" + lines
            with self.path.open("ab") as handle:
                handle.write(lines.encode())


def clean_query(answer: str, max_chars: int) -> str | None:
    """The query in a generated answer: its first non-empty line without a "Query:" label
    or quotes, up to its first question mark; None when nothing word-like is left."""
    line = next((part.strip() for part in answer.splitlines() if part.strip()), "")
    line = _LABEL.sub("", line).strip().strip(_QUOTES).strip()
    if "?" in line:
        line = line[: line.index("?") + 1]
    if line.endswith(":"):
        return None  # a lead-in ("Here is the query:") with the query on no line of its own
    line = " ".join(line.split())[:max_chars]
    return line if sum(c.isalnum() for c in line) >= 2 else None


class QueryWriter:
    """Writes queries for item texts with a causal LM (loaded on first use)."""

    BATCH_ITEMS = 8

    def __init__(self, generator: Generator, config: SyntheticQueriesConfig) -> None:
        self.generator = generator
        self.config = config
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = str(self.generator.path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError) as error:
            message = f"{FIELD}: cannot load {self.generator.name!r}: {error}"
            raise Invalid(message, field=FIELD) from error
        tokenizer.padding_side = "left"  # generation continues each prompt's last token
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model, self._tokenizer = model.to(device).eval(), tokenizer

    def prompt(self, text: str) -> str:
        message = self.config.prompt.replace("{text}", text[: self.config.max_item_chars])
        if self.config.chat_template and self._tokenizer.chat_template:
            chat = [{"role": "user", "content": message}]
            rendered: str = self._tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=True
            )
            return rendered
        return message

    def write(self, texts: Sequence[str], *, seed: int, max_query_chars: int) -> list[list[str]]:
        """Up to `queries_per_item` distinct queries per text (fewer when answers repeat or
        are empty)."""
        import torch

        if self._model is None:
            self._load()
        config, tokenizer = self.config, self._tokenizer
        sampling = config.temperature > 0
        per_item = config.queries_per_item if sampling else 1
        room = getattr(self._model.config, "max_position_embeddings", None) or 2048
        inputs = tokenizer(
            [self.prompt(text) for text in texts],
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=max(8, min(room, 2048) - config.max_new_tokens),
            return_tensors="pt",
        ).to(self._model.device)
        options: dict[str, Any] = {"do_sample": sampling, "num_return_sequences": per_item}
        if sampling:
            options.update(temperature=config.temperature, top_p=0.95, top_k=0)
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            output = self._model.generate(
                **inputs,
                max_new_tokens=config.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                stop_strings=["\n"],  # the query is the first line: stop there
                tokenizer=tokenizer,
                **options,
            )
        answers = tokenizer.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        written: list[list[str]] = [[] for _ in texts]
        seen: list[set[str]] = [set() for _ in texts]
        for n, answer in enumerate(answers):  # each text's answers in a row
            query = clean_query(answer, max_query_chars)
            if query is not None and normalize_query(query) not in seen[n // per_item]:
                seen[n // per_item].add(normalize_query(query))
                written[n // per_item].append(query)
        return written


def write_missing(
    writer: QueryWriter,
    cache: QueryCache,
    keyed: Sequence[tuple[str, str]],
    *,
    max_query_chars: int,
) -> int:
    """Write queries for each (key, text) the cache lacks, a batch at a time, appending
    each batch to the cache; returns how many items were written."""
    missing = [(key, text) for key, text in keyed if key not in cache.entries]
    size = QueryWriter.BATCH_ITEMS
    for start in range(0, len(missing), size):
        batch = missing[start : start + size]
        seed = int(content_hash([key for key, _ in batch])[:8], 16)
        written = writer.write([t for _, t in batch], seed=seed, max_query_chars=max_query_chars)
        cache.add({key: queries for (key, _), queries in zip(batch, written, strict=True)})
        logger.info(
            "synthetic queries: wrote for %d of %d items (%s)",
            min(start + size, len(missing)),
            len(missing),
            writer.generator.name,
        )
    return len(missing)
