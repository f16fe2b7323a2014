"""Generation through the SDK and `fineloop generate`, against a real `fineloop serve`
with a project on the tiny Llama: replies, streaming, the interactions they log, errors,
and the wait through a 503 while the model loads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fineloop import Client, FineloopError
from fineloop.cli import app
from fineloop.config import get_settings

PROJECT = "assistant"
ASK = [{"role": "user", "content": "Say something about the sea."}]


def _live_server_class(config: pytest.Config) -> Any:
    """`LiveServer` of the root conftest (this folder's conftest shadows the name)."""
    root = Path(__file__).resolve().parents[1] / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", None) or "/").resolve() == root:
            return plugin.LiveServer
    raise LookupError(root)


@pytest.fixture(scope="module")
def server(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path
) -> Iterator[Any]:
    """One `fineloop serve` for the module, answering 503 at once while a model loads
    (the SDK waits through it); its own SQLite store."""
    data_dir = tmp_path_factory.mktemp("sdk-server")
    settings = get_settings(
        data_dir=data_dir,
        models_root=tmp_path_factory.getbasetemp(),
        serving_wait_seconds=0.0,
    )
    live = _live_server_class(pytestconfig)(settings)
    with Client(live.url) as client:
        client.create_project(PROJECT, "generation", base_model=str(tiny_llama))
    yield live
    live.stop()


@pytest.fixture
def sdk(server: Any) -> Iterator[Client]:
    with Client(server.url, timeout=60) as client:
        yield client


def test_generate_answers_messages_and_prompts_and_logs_them(sdk: Client) -> None:
    first = sdk.generate(PROJECT, ASK, max_tokens=8, user_id="u1")
    again = sdk.generate(PROJECT, messages=ASK, max_tokens=8)
    plain = sdk.generate(PROJECT, prompt="Name a colour.", max_tokens=4, version="v0")

    assert first["text"] == again["text"]  # temperature 0 by default: greedy
    assert first["model_version"] == "v0" and 0 < first["usage"]["completion_tokens"] <= 8
    assert plain["usage"]["completion_tokens"] <= 4
    logged = sdk.get_interaction(PROJECT, first["interaction_id"])
    assert logged["input"] == {"messages": ASK} and logged["user_id"] == "u1"
    assert logged["output"]["text"] == first["text"]
    assert sdk.get_interaction(PROJECT, plain["interaction_id"])["input"] == {
        "prompt": "Name a colour."
    }
    thumbed = sdk.thumb(PROJECT, first["interaction_id"], up=True)
    assert thumbed["reward"] == 1.0


def test_chat_streams_the_same_reply_it_answers_whole(sdk: Client) -> None:
    whole = sdk.chat(PROJECT, ASK, temperature=0, max_tokens=12)
    with sdk.chat(
        PROJECT,
        ASK,
        version="champion",
        stream=True,
        temperature=0,
        max_tokens=12,
        stream_options={"include_usage": True},
    ) as stream:
        assert stream.interaction_id  # known before the first piece
        pieces = list(stream)

    reply = whole["choices"][0]["message"]["content"]
    assert whole["object"] == "chat.completion" and whole["model"] == f"{PROJECT}:v0"
    assert pieces and "".join(pieces) == reply
    assert stream.finish_reason == whole["choices"][0]["finish_reason"]
    assert stream.usage is not None
    assert stream.usage["completion_tokens"] == whole["usage"]["completion_tokens"]
    logged = sdk.get_interaction(PROJECT, stream.interaction_id)
    assert (
        logged["output"]["text"] == reply and logged["metadata"]["endpoint"] == "chat.completions"
    )


def test_refusals_carry_the_servers_status_and_message(sdk: Client) -> None:
    with pytest.raises(FineloopError) as unknown:
        sdk.chat("nobody", ASK)
    with pytest.raises(FineloopError) as streamed:
        sdk.chat("nobody", ASK, stream=True)
    with pytest.raises(FineloopError) as both:
        sdk.generate(PROJECT, ASK, prompt="and this")

    assert unknown.value.status == 404 and unknown.value.code == "model_not_found"
    assert "nobody" in unknown.value.message  # OpenAI's error body, read as ours
    assert streamed.value.status == 404 and streamed.value.message == unknown.value.message
    assert both.value.status == 422 and "either messages or prompt" in both.value.message


def test_a_call_waits_through_the_503_of_a_model_still_loading(
    sdk: Client, tiny_llama: Path
) -> None:
    sdk.create_project("cold", "generation", base_model=str(tiny_llama))  # not loaded yet
    statuses: list[int] = []
    sdk._t.http.event_hooks["response"].append(lambda r: statuses.append(r.status_code))

    reply = sdk.generate("cold", ASK, max_tokens=4)
    answered = statuses.copy()
    sdk.create_project("cold-stream", "generation", base_model=str(tiny_llama))
    statuses.clear()
    with sdk.chat("cold-stream", ASK, stream=True, max_tokens=4) as stream:
        text = stream.text

    assert answered[0] == 503 and answered[-1] == 200  # asked again after the pause
    assert statuses[0] == 503 and statuses[-1] == 200  # the stream too, before any byte
    assert reply["model_version"] == "v0" and stream.interaction_id
    assert isinstance(text, str) and stream.finish_reason in {"stop", "length"}


def test_the_generate_command_prints_the_reply_and_the_interaction(
    sdk: Client,
) -> None:
    expected = sdk.generate(PROJECT, ASK, max_tokens=6)["text"]

    result = CliRunner().invoke(
        app,
        ["generate", PROJECT, ASK[0]["content"], "--max-tokens", "6", "--url", sdk.url],
    )
    missing = CliRunner().invoke(app, ["generate", "nobody", "hi", "--url", sdk.url])

    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"  # the reply alone on stdout
    logged = sdk.list_interactions(PROJECT, limit=1)[0]
    assert f"interaction {logged['id']} (v0," in " ".join(result.output.split())
    assert missing.exit_code == 1 and "nobody" in missing.output


def test_an_unreachable_server_is_one_error_line() -> None:
    result = CliRunner().invoke(app, ["generate", PROJECT, "hi", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "cannot reach" in " ".join(result.output.split())
    with Client("http://127.0.0.1:9", retries=0) as client, pytest.raises(FineloopError) as error:
        client.chat(PROJECT, ASK, stream=True)
    assert error.value.status == 0 and isinstance(error.value.__cause__, httpx.ConnectError)
