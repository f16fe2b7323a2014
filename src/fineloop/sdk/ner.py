"""The NER call of `Client`: `extract`.

It logs one interaction per text on the server and answers their ids (`interaction_id` of
each result); attach what the right spans were to them (`client.correct` with
{"spans": [...]} or {"edits": [...]}, or a label event). Like `generate` it is not retried
once sent (a repeat would log the interactions twice), except after a 503 with
Retry-After (the model is loading; nothing was logged).

    answer = client.extract("maintenance", "Replaced the seal on the Flowserve pump.")
    for span in answer["results"][0]["spans"]:
        print(span["text"], span["label"], span["score"], span["source"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fineloop.sdk.transport import Transport, project_path


class NerCalls:
    _t: Transport

    def extract(
        self,
        project: str,
        texts: str | Sequence[str],
        *,
        documents: str | Sequence[str] | None = None,
        version: str | int | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The entity spans of one text (a str) or several (a list; at most 256 and
        200,000 characters per call): `results` (per text, in order: `interaction_id` and
        `spans`, each {start, end, label, score, text, source}), and the `model_version`
        and rollout `variant` that answered. `documents`: the document of the text (a
        list of one per text for a list), kept together when the project's data is split."""
        body: dict[str, Any] = {}
        if isinstance(texts, str):
            body["text"] = texts
            if documents is not None:
                body["document"] = documents
        else:
            body["texts"] = list(texts)
            if documents is not None:
                body["documents"] = documents if isinstance(documents, str) else list(documents)
        if version is not None:
            body["version"] = str(version)
        if user_id is not None:
            body["user_id"] = user_id
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return self._t.obj("POST", f"{project_path(project)}/extract", body=body)
