"""Hard negatives mined from the catalog with `sentence_transformers.util.mine_hard_negatives`.

For each query, the model ranks every item; the highest-ranked items that are not known
positives become negatives. Two guards keep likely false negatives out: every positive of
the query's *group* (its paraphrases included) is handed to the miner as a positive, so
it is never returned; and a candidate must score at least `margin` below the query's
weakest positive (`absolute_margin`), since an unlabelled item that the model ranks as
high as a right one is often right too.

The catalog's vectors come from the model's vector file when it has them (see
corpus_vectors.py): a champion being served has its catalog encoded already.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from fineloop.data.splits import QueryGroups
from fineloop.errors import Invalid
from fineloop.tasks.embedding.corpus_vectors import documents_from_cache
from fineloop.tasks.embedding.examples import Example
from fineloop.tasks.embedding.rows import group_positives

_SIMILARITY_BUDGET = 1 << 25  # floats in one query-batch x corpus similarity block (128 MiB)


def mine(
    model_path: str,
    queries: Mapping[str, Sequence[str]],
    corpus: Sequence[str],
    *,
    num_negatives: int,
    margin: float,
    range_min: int,
    range_max: int | None,
    batch_size: int = 64,
    vectors: Path | None = None,
) -> dict[str, list[str]]:
    """query text → up to `num_negatives` mined negative texts, hardest first.

    `queries` maps each query to the texts of its known positives; `corpus` is every
    candidate text. Returns no entry for queries where nothing cleared the margin.
    `vectors`: the project's vector folder, where the corpus may be encoded already.
    """
    from datasets import Dataset  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    rows = [(query, text) for query, positives in queries.items() for text in positives]
    if not rows or not corpus:
        return {}
    try:
        model = SentenceTransformer(model_path)
    except (OSError, ValueError) as error:  # no such folder, or a hub id with no hub here
        raise Invalid(
            f"cannot load the model {model_path!r} to mine negatives: {error}",
            field="model_path",
        ) from error
    pairs = Dataset.from_dict({"anchor": [q for q, _ in rows], "positive": [t for _, t in rows]})
    with documents_from_cache(model, model_path=model_path, folder=vectors, phase="mining"):
        mined = mine_hard_negatives(
            pairs,
            model,
            anchor_column_name="anchor",
            positive_column_name="positive",
            corpus=list(corpus),
            range_min=range_min,
            range_max=range_max,
            absolute_margin=margin,
            num_negatives=num_negatives,
            sampling_strategy="top",  # deterministic: same model and data, same negatives
            output_format="labeled-pair",
            batch_size=batch_size,
            faiss_batch_size=max(1, _SIMILARITY_BUDGET // len(corpus)),
            verbose=False,
        )
    found: dict[str, list[str]] = {}
    for anchor, text, label in zip(mined["anchor"], mined["positive"], mined["label"], strict=True):
        if label == 0:
            found.setdefault(anchor, []).append(text)
    return found


def mine_item_negatives(
    model_path: str,
    examples: Sequence[Example],
    groups: QueryGroups,
    texts: Mapping[str, str],
    *,
    num_negatives: int,
    margin: float,
    range_min: int,
    range_max: int | None,
    vectors: Path | None = None,
) -> dict[str, list[str]]:
    """Query → mined negative item ids, over the whole catalog (`texts`: id → text).

    Each query is handed every positive of its group, so no known positive (its own or a
    paraphrase's) comes back as a negative. Items sharing a text are one candidate.
    """
    positives = group_positives(examples, groups)
    queries = {
        e.query: sorted({texts[i] for i in positives[groups.key(e.query)]}) for e in examples
    }
    by_text: dict[str, list[str]] = {}
    for item_id, text in sorted(texts.items()):
        by_text.setdefault(text, []).append(item_id)
    mined = mine(
        model_path,
        queries,
        list(by_text),
        num_negatives=num_negatives,
        margin=margin,
        range_min=range_min,
        range_max=range_max,
        vectors=vectors,
    )
    return {query: [by_text[text][0] for text in found] for query, found in mined.items()}
