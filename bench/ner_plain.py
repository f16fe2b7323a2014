"""The bare side of the NER benchmarks: the textbook transformers token-classification
script (the shape of transformers' `run_ner.py` example), run as a child process so its
peak RSS is its own.

`AutoModelForTokenClassification` on the base with the WNUT tags (a fresh head, seeded by
`set_seed` before the model is made; a base that already has these tags keeps its head),
words tokenised with `is_split_into_words=True`, truncated at `max_length`, the tag on each
word's first sub-word and -100 on the others, `DataCollatorForTokenClassification`, and
`Trainer` with no evaluation, no checkpoints and no class weights. Prediction reads each
word's first sub-word (a word past `max_length` is tagged O).

    .venv/bin/python bench/ner_plain.py SPEC.json    # SPEC: see `ner_quality.plain_spec`

Prints `RESULT {json}`: the test tags, timings and peak RSS.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from _child import peak_rss_mb, print_result, set_threads
from _ner_common import load_sentences

IGNORE = -100


def word_labels(encoding: Any, row: int, tags: list[int]) -> list[int]:
    """The first sub-word of each word gets its tag; other tokens -100."""
    labels, previous = [], None
    for word in encoding.word_ids(row):
        labels.append(IGNORE if word is None or word == previous else tags[word])
        previous = word
    return labels


def encode(
    tokenizer: Any, sentences: list[Any], tag2id: dict[str, int], length: int
) -> tuple[Any, Any]:
    """The rows for the Trainer, and the tokenizer's encoding (for its word ids)."""
    from datasets import Dataset  # type: ignore[import-untyped]

    encoding = tokenizer(
        [s.tokens for s in sentences], is_split_into_words=True, truncation=True, max_length=length
    )
    labels = [
        word_labels(encoding, i, [tag2id[t] for t in s.tags]) for i, s in enumerate(sentences)
    ]
    return Dataset.from_dict(dict(encoding) | {"labels": labels}), encoding


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    set_threads(spec["threads"])
    import numpy as np
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    started = time.perf_counter()
    tags: list[str] = spec["tags"]
    tag2id = {t: i for i, t in enumerate(tags)}
    train = load_sentences(Path(spec["train"]))
    test = load_sentences(Path(spec["test"]))
    tokenizer = AutoTokenizer.from_pretrained(spec["base"])
    set_seed(spec["seed"])
    model = AutoModelForTokenClassification.from_pretrained(
        spec["base"],
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id=tag2id,
        ignore_mismatched_sizes=True,
    )
    args = TrainingArguments(
        output_dir=str(Path(spec["work"]) / "run"),
        num_train_epochs=spec["epochs"],
        per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=32,
        learning_rate=spec["learning_rate"],
        weight_decay=spec["weight_decay"],
        warmup_steps=spec["warmup_ratio"],  # transformers 5: a float below 1 is a share
        bf16=spec["bf16"],
        use_cpu=True,
        seed=spec["seed"],
        data_seed=spec["seed"],
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode(tokenizer, train, tag2id, spec["max_length"])[0],
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    fit = trainer.train().metrics["train_runtime"]
    if spec.get("save_to"):
        trainer.save_model(spec["save_to"])
    train_s = time.perf_counter() - started
    rss_train = peak_rss_mb()

    # Prediction: each test word's tag is read on its first sub-word; a word with no
    # sub-word (cut at max_length, or one the tokenizer drops) is O.
    test_rows, encoding = encode(tokenizer, test, tag2id, spec["max_length"])
    chosen = np.asarray(trainer.predict(test_rows).predictions).argmax(-1)
    found: list[list[str]] = []
    for row, sentence in enumerate(test):
        words = ["O"] * len(sentence.tokens)
        previous = None
        for position, word in enumerate(encoding.word_ids(row)):
            if word is not None and word != previous:
                words[word] = tags[int(chosen[row][position])]
            previous = word
        found.append(words)
    print_result(
        {
            "tags": found,
            "fit_s": fit,
            "train_s": train_s,
            "rows": len(train),
            "epochs": spec["epochs"],
            "steps": trainer.state.global_step,
            "peak_rss_train_mb": rss_train,
            "peak_rss_mb": peak_rss_mb(),
        }
    )


if __name__ == "__main__":
    main()
