"""Chat JSONL (`format=chat`): prompt/completion, OpenAI messages and preference pairs become
interactions and feedback, and a snapshot built from them holds the rows the file promised.

The fixture is a few real lines: Self-Instruct seed tasks (questions and answers written by
people) and Anthropic HH-RLHF pairs (a conversation with a better and a worse last reply),
converted into the chat format here, independently of the importer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from fineloop.cli import app
from fineloop.config import Settings
from fineloop.data import read_project
from fineloop.errors import BadFile
from fineloop.schemas import ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project
from fineloop.store.schema import Feedback, Interaction
from fineloop.tasks import available
from fineloop.tasks.generation.build import GenerationBuildConfig, build_snapshot
from fineloop.transfer import chat
from fineloop.transfer.service import import_file

DATASETS = Path(
    os.environ.get("FINELOOP_TEST_DATASETS")
    or Path(__file__).resolve().parents[3] / "shared" / "datasets"
)
Messages = list[dict[str, str]]


def _seed_tasks(count: int) -> list[tuple[str, str]]:
    path = DATASETS / "self-instruct" / "seed_tasks.jsonl"
    assert path.exists(), f"the Self-Instruct sample is missing: {path} (../shared/datasets)"
    pairs = []
    for line in path.read_text().splitlines()[:count]:
        task = json.loads(line)
        instance = task["instances"][0]
        question = "\n\n".join(p for p in (task["instruction"], instance["input"]) if p)
        pairs.append((question, instance["output"]))
    return pairs


def _turns(transcript: str) -> Messages:
    """An HH-RLHF transcript ("\\n\\nHuman: … \\n\\nAssistant: …") as chat messages."""
    messages: Messages = []
    for chunk in transcript.split("\n\nHuman: ")[1:]:
        human, *replies = chunk.split("\n\nAssistant: ")
        messages.append({"role": "user", "content": human.strip()})
        messages += [{"role": "assistant", "content": r.strip()} for r in replies]
    return messages


def _hh_pairs(count: int) -> list[tuple[Messages, str, str]]:
    """(conversation up to the last reply, better reply, worse reply), from HH-RLHF lines
    whose last replies differ and are not empty."""
    path = DATASETS / "hh-rlhf" / "helpful-base-test.jsonl"
    assert path.exists(), f"the HH-RLHF sample is missing: {path} (../shared/datasets)"
    pairs = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        chosen, rejected = _turns(row["chosen"]), _turns(row["rejected"])
        if chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant":
            continue
        better, worse = chosen[-1]["content"], rejected[-1]["content"]
        if better and worse and better != worse:
            pairs.append((chosen[:-1], better, worse))
        if len(pairs) == count:
            break
    return pairs


SEEDS = _seed_tasks(4)
HH = _hh_pairs(4)


def chat_file() -> tuple[bytes, dict[str, Any]]:
    """A chat JSONL file and what a snapshot of it must hold (SFT rows, DPO pairs)."""
    lines: list[dict[str, Any]] = []
    sft: set[str] = set()
    dpo: set[str] = set()

    def key(*parts: Any) -> str:
        return json.dumps(parts)

    for question, answer in SEEDS:  # prompt / completion
        lines.append({"prompt": question, "completion": answer})
        sft.add(key([{"role": "user", "content": question}], answer.strip()))
    for conversation, better, _ in HH[:2]:  # OpenAI messages, with a system turn
        system = [{"role": "system", "content": "You are a helpful assistant."}]
        reply = {"role": "assistant", "content": better}
        lines.append({"messages": [*system, *conversation, reply]})
        sft.add(key([*system, *conversation], better.strip()))
    for conversation, better, worse in HH[2:]:  # preferences with a message-list prompt
        lines.append({"prompt": conversation, "chosen": better, "rejected": worse})
        dpo.add(key(conversation, better.strip(), worse.strip()))
    lines.append({"prompt": "Name a primary colour.", "chosen": "Red.", "rejected": "Green."})
    dpo.add(key([{"role": "user", "content": "Name a primary colour."}], "Red.", "Green."))
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return data, {"sft": sft, "dpo": dpo, "examples": 6, "preferences": 3}


def _stored(store: Store) -> tuple[int, dict[str, int]]:
    with store.read() as session:
        interactions = session.scalar(select(func.count()).select_from(Interaction)) or 0
        kinds = session.execute(select(Feedback.kind, func.count()).group_by(Feedback.kind))
        return interactions, {row[0]: row[1] for row in kinds}


@pytest.fixture
def chat_project(store: Store) -> str:
    # Until the generation family is installed, any family holds chat data just the same.
    task = "generation" if "generation" in available() else "embedding"
    with store.write() as session:
        create_project(session, ProjectCreate(name="helpdesk", task=task))
    return "helpdesk"


def test_the_fixture_is_what_it_claims() -> None:
    assert len(SEEDS) == 4 and len(HH) == 4
    for conversation, better, worse in HH:
        assert conversation[-1]["role"] == "user" and better != worse


def test_import_through_the_api_builds_the_rows_of_the_file(
    client: TestClient, store: Store, settings: Settings, chat_project: str, tmp_path: Path
) -> None:
    data, expected = chat_file()
    response = client.post(
        f"/v1/projects/{chat_project}/import/feedback", params={"format": "chat"}, content=data
    )
    assert response.status_code == 200, response.text
    reports = {r["resource"]: (r["rows"], r["created"]) for r in response.json()}
    examples, preferences = expected["examples"], expected["preferences"]
    assert reports == {
        "interactions": (examples, examples),
        "feedback": (examples + preferences, examples + preferences),
    }
    assert _stored(store) == (examples, {"thumb": examples, "preference": preferences})
    with store.read() as session:
        metadata = session.scalars(select(Interaction.interaction_metadata)).all()
    assert all(meta == {"source": "import"} for meta in metadata)

    built = build_snapshot(
        read_project(store, chat_project),
        settings,
        tmp_path / "snap",
        seed=3,
        config=GenerationBuildConfig(min_examples=1),
    )
    from datasets import load_from_disk

    def every(method: str) -> list[dict[str, Any]]:
        splits = load_from_disk(str(built.path / method))
        return [row for name in splits for row in splits[name]]

    def key(*parts: Any) -> str:
        return json.dumps(parts)

    sft = {key(r["prompt"], r["completion"][0]["content"]) for r in every("sft")}
    assert sft == expected["sft"]
    kto = every("kto")
    assert all(row["label"] for row in kto)  # each imported answer is a known-good one
    assert {key(r["prompt"], r["completion"][0]["content"]) for r in kto} == sft
    dpo = {
        key(r["prompt"], r["chosen"][0]["content"], r["rejected"][0]["content"])
        for r in every("dpo")
    }
    assert dpo == expected["dpo"]
    # Every row traces back to the imported events.
    with store.read() as session:
        event_ids = set(session.scalars(select(Feedback.id)).all())
    lineage = {i for m in ("sft", "dpo", "kto") for row in every(m) for i in row["feedback_ids"]}
    assert lineage == event_ids


def test_a_second_import_stores_nothing_new(store: Store, chat_project: str) -> None:
    data, _ = chat_file()
    import_file(store, chat_project, "feedback", data, "chat")
    before = _stored(store)
    reports = import_file(store, chat_project, "feedback", data, "chat")
    assert [(r.resource, r.created) for r in reports] == [("interactions", 0), ("feedback", 0)]
    assert _stored(store) == before
    # A line repeated in one file is one example too.
    line = b'{"prompt": "Repeat me", "completion": "Once."}\n'
    reports = import_file(store, chat_project, "feedback", line * 3, "chat")
    assert [(r.resource, r.created) for r in reports] == [("interactions", 1), ("feedback", 1)]


def test_the_same_conversation_in_two_shapes_is_one_interaction() -> None:
    as_messages = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    }
    as_prompt_list = {"prompt": [{"role": "user", "content": "Hi"}], "completion": "Hello"}
    as_text = {"prompt": "Hi", "completion": "Hello"}
    ids = [
        chat.convert(json.dumps(line).encode())[0][0].id
        for line in (as_messages, as_prompt_list, as_text)
    ]
    # A message list is one input shape, a plain prompt another: the first two are one.
    assert ids[0] == ids[1] != ids[2]


GOOD = '{"prompt": "What is 2 + 2?", "completion": "4"}'
BAD_LINES = [
    ('{"prompt": "p", "chosen": "Same answer", "rejected": "Same answer "}', "the same text"),
    ('{"prompt": "p", "completion": "   "}', "completion is empty"),
    (
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "hey"}]}',
        "the last message must be the assistant's reply",
    ),
    ('{"messages": [{"role": "assistant", "content": "hi"}]}', "must end with a user message"),
    (
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}',
        "messages[1] has empty content",
    ),
    ('{"prompt": "p", "completion": 42}', "completion must be a string"),
    ('{"prompt": 7, "completion": "a"}', "prompt must be a string or a list of messages"),
    ('{"messages": "hi"}', "messages must be a non-empty list of messages"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "messages[0].role must be one of"),
    ('{"messages": [{"role": "user", "content": ["hi"]}]}', "messages[0].content must be a string"),
    ('{"prompt": "p", "chosen": "a"}', "a preference line needs 'rejected'"),
    ('{"prompt": "p", "completion": "a", "source": "x"}', "unknown key 'source'"),
    ('{"question": "p", "answer": "a"}', "each line needs"),
    ('["p", "a"]', "expected a JSON object"),
    ('{"prompt": "p", "completion": ', "not valid JSON"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_LINES, ids=[p for _, p in BAD_LINES])
def test_a_bad_line_is_a_422_naming_it(
    client: TestClient, store: Store, chat_project: str, line: str, problem: str
) -> None:
    data = f"{GOOD}\n\n{line}\n{GOOD}\n".encode()  # the blank line counts: the bad one is 3
    response = client.post(
        f"/v1/projects/{chat_project}/import/feedback", params={"format": "chat"}, content=data
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["line"] == 3
    assert body["message"].startswith("line 3: ")
    assert problem in body["message"]
    assert _stored(store) == (0, {})  # all or nothing
    with pytest.raises(BadFile) as caught:
        chat.convert(data)
    assert caught.value.line == 3


def test_the_cli_imports_a_chat_file(
    settings: Settings, store: Store, chat_project: str, tmp_path: Path
) -> None:
    source = tmp_path / "train.jsonl"
    source.write_bytes(chat_file()[0])
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    result = CliRunner().invoke(
        app, ["feedback", "import", str(source), "-p", chat_project, "-f", "chat"], env=env
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "interactions: 6 rows, 6 new" in said
    assert "feedback: 9 rows, 9 new" in said
