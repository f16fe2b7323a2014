"""How unsure a served ranking was, read from what the interaction stored (no model runs):
what the review queue orders embedding interactions by.

A search or select interaction stores its shown items in rank order, each with its cosine
`score` and calibrated `probability` (serving/service.py). Two questions, two measures:

- a **ranking** (search, or any logged list with scores): which shown item is right? The
  doubt is the entropy of the model's own distribution over the shown items, softmax of
  the cosines at the scale its training loss uses (MNRL: 20), divided by its maximum
  log(n) so it lies in [0, 1]. On a Banking77 pool with the untrained MiniLM it told the
  searches whose top item was wrong from the others with a ROC AUC of 0.82, where the
  probability nearest 0.5 managed 0.60 (bench/curation.py --active-learning);
- a **select** call's decision (its own `threshold` applied): did the items cross it
  rightly? The doubt is 1 - the distance of the nearest top-`TOP` probability to that
  threshold.

A ranking logged with probabilities but no scores falls back to the second measure, with
the project's `serving_policy.select_threshold`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeGuard

from fineloop.errors import Invalid
from fineloop.store.interactions import shown_item_ids
from fineloop.tasks.base import ReviewEdit

MAX_QUERY_CHARS = 2_000  # as the snapshot builder's default cut
TOP = 3  # the top shown items whose probability counts: the ones a user looks at
SCALE = 20.0  # MultipleNegativesRankingLoss's default: cosines as its softmax reads them


def ranking_uncertainty(output: Any, select_threshold: float) -> float | None:
    """In [0, 1], 1 = most unsure: for a ranking, the normalised entropy of the softmax of
    its shown scores; for a select call, 1 - the distance from its threshold of the nearest
    top-`TOP` probability. None when the output is no ranking or shows too little."""
    if not isinstance(output, dict) or not isinstance(output.get("items"), list):
        return None
    shown = [entry for entry in output["items"] if isinstance(entry, dict)]
    own = output.get("threshold")
    if output.get("mode") == "select" and _number(own):
        return _nearest_threshold(shown, float(own))
    scores = [float(e["score"]) for e in shown if _number(e.get("score"))]
    if len(scores) >= 2:
        return _entropy(scores)
    return _nearest_threshold(shown, select_threshold)


def _entropy(scores: list[float]) -> float:
    """The entropy of softmax(SCALE * scores) over its maximum, log(len(scores))."""
    top = max(scores)
    weights = [math.exp(SCALE * (score - top)) for score in scores]
    total = sum(weights)
    entropy = -sum(w / total * math.log(w / total) for w in weights if w > 0)
    return round(min(1.0, entropy / math.log(len(scores))), 6)


def _nearest_threshold(shown: list[dict[str, Any]], threshold: float) -> float | None:
    probabilities = [e["probability"] for e in shown[:TOP] if _number(e.get("probability"))]
    if not probabilities:
        return None
    nearest = min(abs(float(p) - threshold) for p in probabilities)
    return round(1.0 - nearest, 6)


def top_item(output: Any) -> str | None:
    """The first item a ranking showed: what two versions are compared on."""
    shown = shown_item_ids(output)
    return shown[0] if shown else None


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


MAX_LABELLED = 100  # item ids one review may name


def label_edit(output: Any) -> ReviewEdit | None:
    """A ranking is answered by naming the right items, starting from the ones the model
    put first (selected, else the top one); None for an output that is no ranking."""
    shown = shown_item_ids(output)
    if not shown:
        return None
    entries = [e for e in output["items"] if isinstance(e, dict) and e.get("selected") is True]
    selected = [k for e in entries if isinstance(k := e.get("id", e.get("item_id")), str)]
    return ReviewEdit(
        "label",
        "\n".join(selected or shown[:1]),
        "The right item ids, one per line, shown or not (find one in the catalog below).",
    )


def label_event(text: str) -> dict[str, Any]:
    """A `label` event naming the item ids on the text's lines (blank lines skipped)."""
    ids = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not ids:
        raise Invalid(
            "name at least one item id; to say none of the shown items fits, reject them all",
            field="text",
        )
    if len(ids) > MAX_LABELLED:
        raise Invalid(f"{len(ids)} item ids: name at most {MAX_LABELLED}", field="text")
    long = [i for i in ids if len(i) > 256]
    if long:
        raise Invalid(f"an item id is at most 256 characters: {long[0][:40]!r}…", field="text")
    return {"kind": "label", "items": ids}


QUERY_CHUNK = 256  # queries scored against the catalog at once (256 x 100k floats: 100 MB)


def candidate_top_items(model: Path, snapshot: Path, inputs: Sequence[Any]) -> list[str | None]:
    """The item a trained model ranks first, over the snapshot's catalog, for each input's
    query (None for an input without one): what a candidate would have shown on top. The
    catalog's vectors come from the model's vector file when the job's evaluation wrote
    them, so this costs the queries' encoding and one matrix product per chunk."""
    import numpy as np

    from fineloop.tasks.embedding.corpus_vectors import (
        encode_corpus,
        encode_texts,
        vectors_folder,
    )
    from fineloop.tasks.embedding.evaluate import load_model, read_corpus
    from fineloop.tasks.embedding.examples import query_text

    corpus = read_corpus(snapshot)
    queries = [query_text(value, MAX_QUERY_CHARS) for value in inputs]
    asked = [q for q in queries if q is not None]
    if not corpus or not asked:
        return [None] * len(inputs)
    ids = list(corpus)
    loaded = load_model(model)
    documents = encode_corpus(
        loaded,
        list(corpus.values()),
        model_path=model,
        folder=vectors_folder(snapshot),
        phase="review",
    )
    firsts: list[str] = []
    for start in range(0, len(asked), QUERY_CHUNK):
        vectors = encode_texts(loaded, asked[start : start + QUERY_CHUNK])
        firsts += [ids[int(i)] for i in np.argmax(vectors @ documents.T, axis=1)]
    answers = iter(firsts)
    return [None if q is None else next(answers) for q in queries]
