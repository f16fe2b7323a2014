"""Exporting generation versions: the merged model answers exactly as base + adapter, the
Ollama Modelfile names the base and the adapter (with the chat template when it can be
derived for certain), and `fineloop models export` does both for a registered version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fineloop import artifacts
from fineloop.cli import app
from fineloop.config import Settings
from fineloop.errors import Invalid
from fineloop.registry.bootstrap import ensure_base_version
from fineloop.registry.versions import register_version
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.tasks import get_task
from fineloop.tasks.generation.export import export_version
from fineloop.tasks.generation.models import load_model, write_adapter_base
from fineloop.tasks.generation.ollama import derive_chat_format, modelfile

CHATML_STOP = 'PARAMETER stop "<|im_end|>"'
# SmolLM2-Instruct's template: ChatML, plus a system prompt when the conversation has none.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] "
    "+ '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
# Llama 2 folds the system message into the first user turn: not one wrapper per role.
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set rest = messages[1:] %}"
    "{% set sys = messages[0]['content'] %}{% else %}{% set rest = messages %}"
    "{% set sys = false %}{% endif %}{% for message in rest %}"
    "{% if loop.index0 == 0 and sys != false %}"
    "{% set content = '<<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + content + ' [/INST]' }}"
    "{% else %}{{ ' ' + content + ' ' + eos_token }}{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny Llama with non-zero weights (so it changes the logits),
    recording its base as training does, with replay rows beside it as training leaves."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    get_peft_model(base, lora).save_pretrained(folder)
    write_adapter_base(folder, str(tiny_llama))
    (folder / "replay" / "sft").mkdir(parents=True)
    (folder / "replay" / "sft" / "rows.arrow").write_bytes(b"training rows")
    return folder


def _logits(model: Any) -> Any:
    import torch

    ids = torch.tensor([[1, 5, 9, 20, 33, 7, 42, 11]])
    with torch.no_grad():
        return model.eval()(ids).logits


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_the_merged_model_answers_like_base_plus_adapter(
    adapter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = export_version(str(adapter), tmp_path / "out", merged=True, ollama=False)

    merged = tmp_path / "out" / "merged"
    assert report.merged == str(merged) and report.modelfile is None
    assert (merged / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()  # a plain model folder
    with_adapter = _logits(load_model(str(adapter), dtype=torch.float32))
    alone = _logits(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32))
    base = _logits(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32))
    assert torch.allclose(alone, with_adapter, atol=1e-4)
    assert (alone - base).abs().max() > 0.1  # the adapter is in the weights
    assert AutoTokenizer.from_pretrained(merged).chat_template is not None
    record = json.loads((tmp_path / "out" / "fineloop_export.json").read_text())
    assert record["base_model"] == str(tiny_llama) and record["adapter"] == str(adapter)


def test_the_modelfile_names_the_base_and_a_copy_of_the_adapter(
    adapter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    report = export_version(str(adapter), tmp_path / "out", merged=False, ollama=True)

    lines = _lines(tmp_path / "out" / "Modelfile")
    assert f"FROM {tiny_llama.resolve()}" in lines
    assert "ADAPTER ./adapter" in lines
    copy = tmp_path / "out" / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in copy.iterdir()}
    assert not (copy / "replay").exists()  # training rows stay home
    assert report.chat_template and CHATML_STOP in lines
    text = "\n".join(lines)
    assert '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n' in text
    assert not (tmp_path / "out" / "merged").exists()


def test_with_the_merged_model_the_modelfile_is_from_it_without_the_adapter(
    adapter: Path, tmp_path: Path
) -> None:
    export_version(str(adapter), tmp_path / "out", merged=True, ollama=True)

    lines = _lines(tmp_path / "out" / "Modelfile")
    assert "FROM ./merged" in lines
    assert not [line for line in lines if line.startswith("ADAPTER")]  # applied once
    assert not (tmp_path / "out" / "adapter").exists()


@pytest.mark.parametrize("template", [SMOLLM2, LLAMA3], ids=["smollm2", "llama3"])
def test_a_derived_chat_format_renders_as_the_tokenizer_does(
    tiny_llama: Path, template: str
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = template
    chat = derive_chat_format(tokenizer)

    assert chat is not None
    for messages in (
        [{"role": "user", "content": "hi there"}],
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "and the sea?"},
            {"role": "assistant", "content": "wet"},
            {"role": "user", "content": "more"},
        ],
    ):
        expected = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        assert chat.render(messages) == expected
    text = modelfile("/base", None, chat, bos_token=tokenizer.bos_token)
    if template == SMOLLM2:
        assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text
        assert '{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}' in text
        assert CHATML_STOP in text
    else:
        assert 'PARAMETER stop "<|eot_id|>"' in text and "SYSTEM" not in text


def test_a_template_of_another_shape_is_left_to_ollama(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = LLAMA2

    assert derive_chat_format(tokenizer) is None
    text = modelfile("/base", "./adapter", None)
    assert "TEMPLATE" not in text.replace("# no TEMPLATE", "") and "# no TEMPLATE" in text


def test_an_export_needs_a_form_and_a_fresh_folder(adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="--merged, --ollama"):
        export_version(str(adapter), tmp_path / "a", merged=False, ollama=False)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(Invalid, match="not an empty folder"):
        export_version(str(adapter), tmp_path / "used", merged=False, ollama=True)


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    return env


def test_models_export_writes_a_registered_version(
    settings: Settings,
    store: Store,
    adapter: Path,
    tiny_llama: Path,
    tmp_path: Path,
    cli_env: dict[str, str],
) -> None:
    runner = CliRunner()
    created = runner.invoke(
        app,
        ["project", "create", "assistant", "--task", "generation", "--base-model", str(tiny_llama)],
        env=cli_env,
    )
    assert created.exit_code == 0, created.output
    folder = artifacts.version_dir(settings, "assistant", 1)
    shutil.copytree(adapter, folder)
    with store.write() as session:
        project = get_project(session, "assistant")
        ensure_base_version(session, project, get_task("generation"))
        register_version(session, project, artifact_uri=str(folder), base_model=str(tiny_llama))

    done = runner.invoke(
        app,
        [
            "models",
            "export",
            "assistant",
            "v1",
            "--out",
            str(tmp_path / "v1"),
            "--merged",
            "--ollama",
        ],
        env=cli_env,
    )
    assert done.exit_code == 0, done.output
    assert "exported assistant v1" in done.output
    assert (tmp_path / "v1" / "merged" / "model.safetensors").is_file()
    assert "FROM ./merged" in _lines(tmp_path / "v1" / "Modelfile")
    record = json.loads((tmp_path / "v1" / "fineloop_export.json").read_text())
    assert record["about"] == {"project": "assistant", "version": "v1", "artifact_uri": str(folder)}

    champion = runner.invoke(
        app,
        ["models", "export", "assistant", "champion", "--out", str(tmp_path / "v0"), "--ollama"],
        env=cli_env,
    )
    assert champion.exit_code == 0, champion.output
    lines = _lines(tmp_path / "v0" / "Modelfile")
    assert f"FROM {tiny_llama.resolve()}" in lines  # v0 is the base itself: no adapter
    assert not [line for line in lines if line.startswith("ADAPTER")]


def test_models_export_refuses_other_families(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["project", "create", "faq"], env=cli_env).exit_code == 0

    refused = runner.invoke(
        app,
        ["models", "export", "faq", "v0", "--out", str(tmp_path / "x"), "--merged"],
        env=cli_env,
    )

    assert refused.exit_code == 1
    said = " ".join(refused.output.split())
    assert "'faq' has task 'embedding'" in said and "generation models only" in said
    assert not (tmp_path / "x").exists()
