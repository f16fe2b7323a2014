"""The generation predictor on a tiny Llama: its text is the model's own, streaming and stop
strings agree with it, adapters share one base, and over-long prompts follow the policy.

The session's tiny Llama has weights so small that greedy decoding repeats one token, which
would make "equal to the bare model" prove little; `lively` is a copy with larger random
weights whose replies vary from prompt to prompt. The adapters are two LoRA adapters made
here with PEFT, each with its own random weights."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from fineloop.config import get_settings
from fineloop.errors import Invalid
from fineloop.tasks.base import Predictor
from fineloop.tasks.generation import predict_bases
from fineloop.tasks.generation.models import write_adapter_base
from fineloop.tasks.generation.predict import GenerationPredictor
from fineloop.tasks.generation.predict_context import fit_prompt
from fineloop.tasks.generation.predict_io import GenerationInput
from fineloop.tasks.generation.predict_stop import StopCutter

QUESTIONS = ["hello there", "what is the weather", "tell me a story", "user system"]


@pytest.fixture(scope="module")
def lively(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny Llama with weights large enough that replies vary."""
    target = tmp_path_factory.mktemp("lively") / "model"
    shutil.copytree(tiny_llama, target)
    model = AutoModelForCausalLM.from_pretrained(target)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.5)
    model.save_pretrained(target)
    return target


def make_adapter(base: Path, folder: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=4,
        lora_alpha=32,
        target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
        init_lora_weights=False,  # random, not the no-op start of training
    )
    get_peft_model(model, config).save_pretrained(folder)
    write_adapter_base(folder, str(base))
    return folder


@pytest.fixture(scope="module")
def adapters(lively: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return make_adapter(lively, root / "a", seed=11), make_adapter(lively, root / "b", seed=22)


@pytest.fixture(scope="module")
def no_template(lively: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with its chat template removed."""
    target = tmp_path_factory.mktemp("plain") / "model"
    shutil.copytree(lively, target)
    (target / "chat_template.jinja").unlink(missing_ok=True)
    config_file = target / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config))
    assert not AutoTokenizer.from_pretrained(target).chat_template
    return target


@pytest.fixture
def predictor(lively: Path) -> Iterator[GenerationPredictor]:
    found = GenerationPredictor(str(lively))
    yield found
    found.close()


def chat(question: str, **options: Any) -> GenerationInput:
    return GenerationInput(messages=[{"role": "user", "content": question}], **options)


def bare_reply(model: Any, tokenizer: Any, prompt_ids: list[int], max_new: int) -> str:
    """What plain transformers answers, greedy."""
    ids = torch.tensor([prompt_ids])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def chat_ids(tokenizer: Any, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_greedy_reply_is_the_models_own(predictor: GenerationPredictor, lively: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(lively)
    tokenizer = AutoTokenizer.from_pretrained(lively)
    replies = set()
    for question in QUESTIONS:
        got = predictor.generate(chat(question, max_tokens=16))
        assert predictor.generate(chat(question, max_tokens=16)) == got
        ids = chat_ids(tokenizer, question)
        assert got.text == bare_reply(model, tokenizer, ids, 16)
        assert got.prompt_tokens == len(ids)
        assert 1 <= got.completion_tokens <= 16
        assert got.finish_reason == ("length" if got.completion_tokens == 16 else "stop")
        assert not got.truncated
        replies.add(got.text)
        # a plain prompt on a chat model is one user message
        assert predictor.generate(GenerationInput(prompt=question, max_tokens=16)) == got
    assert len(replies) == len(QUESTIONS)  # the model answers, not a constant


def test_plain_prompt_without_chat_template_is_used_as_is(no_template: Path) -> None:
    predictor = GenerationPredictor(str(no_template))
    model = AutoModelForCausalLM.from_pretrained(no_template)
    tokenizer = AutoTokenizer.from_pretrained(no_template)
    got = predictor.generate(GenerationInput(prompt="tell me a story", max_tokens=12))
    ids = list(tokenizer("tell me a story")["input_ids"])
    assert got.prompt_tokens == len(ids)
    assert got.text == bare_reply(model, tokenizer, ids, 12)
    with pytest.raises(Invalid, match="no chat template: send a plain prompt") as caught:
        predictor.generate(chat("hi"))
    assert caught.value.field == "messages"


def test_stream_chunks_join_to_the_generated_text(predictor: GenerationPredictor) -> None:
    for question in QUESTIONS:
        request = chat(question, max_tokens=24)
        whole = predictor.generate(request)
        stream = predictor.stream(request)
        chunks = list(stream)
        assert len(chunks) > 1
        assert "".join(chunks) == whole.text
        assert stream.output == whole


def test_stop_strings_cut_the_reply(predictor: GenerationPredictor) -> None:
    full = predictor.generate(chat("tell me a story", max_tokens=24))
    assert full.finish_reason == "length" and len(full.text) > 8
    stop = full.text[len(full.text) // 2 :][:2]
    expected = full.text[: full.text.find(stop)]
    got = predictor.generate(chat("tell me a story", max_tokens=24, stop=[stop]))
    assert got.text == expected
    assert stop not in got.text
    assert got.finish_reason == "stop"
    assert got.completion_tokens < full.completion_tokens  # generation stopped there
    streamed = predictor.stream(chat("tell me a story", max_tokens=24, stop=[stop]))
    assert "".join(streamed) == expected
    assert streamed.output == got
    never = predictor.generate(chat("tell me a story", max_tokens=24, stop=["\x00never"]))
    assert never == full


def test_closing_a_stream_stops_generating(predictor: GenerationPredictor) -> None:
    stream = predictor.stream(chat("tell me a story", max_tokens=200))
    assert next(stream)
    stream.close()
    assert not predictor.base.lock.locked()
    assert stream.output is None
    assert predictor.generate(chat("hi", max_tokens=4)).completion_tokens >= 1
    # a cancelled stream stops after the token it is generating
    cancelled = predictor.stream(chat("tell me a story", max_tokens=200))
    cancelled.cancel()
    text = "".join(cancelled)
    assert cancelled.output is not None and cancelled.output.completion_tokens == 1
    assert cancelled.output.text == text


def test_a_template_that_refuses_the_roles_is_invalid(lively: Path, tmp_path: Path) -> None:
    strict = tmp_path / "strict"
    shutil.copytree(lively, strict)
    template = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    (strict / "chat_template.jinja").write_text(template)
    predictor = GenerationPredictor(str(strict))
    with pytest.raises(Invalid, match="System role not supported") as caught:
        predictor.generate(
            GenerationInput(messages=[{"role": "system", "content": "be brief"}])  # type: ignore[list-item]
        )
    assert caught.value.field == "messages"
    assert predictor.generate(chat("hi", max_tokens=2)).completion_tokens >= 1
    predictor.close()


def test_stop_cutter_holds_back_only_what_may_start_a_stop() -> None:
    cutter = StopCutter(["STOP", "\n\n"])
    shown = [cutter.feed(c) for c in ["Hel", "lo S", "T", "ART ST", "OP and more"]]
    assert shown == ["Hel", "lo ", "", "START ", ""]
    assert cutter.stopped and cutter.feed("later") == "" and cutter.finish() == ""
    tail = StopCutter(["STOP"])
    assert tail.feed("end ST") == "end " and tail.finish() == "ST"
    split = StopCutter(["\n\n"])
    assert [split.feed(c) for c in ["a\n", "\nb"]] == ["a", ""] and split.stopped


def test_two_adapters_share_one_base(lively: Path, adapters: tuple[Path, Path]) -> None:
    key = predict_bases.base_key(str(lively))
    loads = predict_bases.BASE_LOADS[key]
    first, second = (GenerationPredictor(str(folder)) for folder in adapters)
    bare = GenerationPredictor(str(lively))
    assert predict_bases.BASE_LOADS[key] == loads + 1
    assert first.base is second.base is bare.base
    assert first.base_loads == loads + 1

    request = chat("what is the weather", max_tokens=16)
    answers = {"a": first.generate(request), "b": second.generate(request)}
    answers["base"] = bare.generate(request)
    assert len({answer.text for answer in answers.values()}) == 3
    order = [first, second, bare, second, first, bare, first]
    names = ["a", "b", "base", "b", "a", "base", "a"]
    for who, name in zip(order, names, strict=True):
        assert who.generate(request) == answers[name]
    assert predict_bases.BASE_LOADS[key] == loads + 1

    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(lively)
    ids = chat_ids(tokenizer, "what is the weather")
    for folder, name in zip(adapters, ["a", "b"], strict=True):
        alone = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lively), folder)
        assert answers[name].text == bare_reply(alone, tokenizer, ids, 16)
    plain = AutoModelForCausalLM.from_pretrained(lively)
    assert answers["base"].text == bare_reply(plain, tokenizer, ids, 16)
    for each in (first, second, bare):
        each.close()


def test_concurrent_requests_on_two_adapters_keep_their_own_answers(
    adapters: tuple[Path, Path],
) -> None:
    predictors = [GenerationPredictor(str(folder)) for folder in adapters]
    requests = [chat(q, max_tokens=12) for q in QUESTIONS]
    expected = [[p.generate(r) for r in requests] for p in predictors]
    wrong: list[str] = []

    def ask(index: int) -> None:
        for _ in range(3):
            for number, request in enumerate(requests):
                got = predictors[index].generate(request)
                if got != expected[index][number]:
                    wrong.append(f"adapter {index}, question {number}")

    def ask_streaming(index: int) -> None:
        for number, request in enumerate(requests):
            if "".join(predictors[index].stream(request)) != expected[index][number].text:
                wrong.append(f"stream {index}, question {number}")

    threads = [threading.Thread(target=ask, args=(i % 2,)) for i in range(4)]
    threads += [threading.Thread(target=ask_streaming, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert wrong == []
    for each in predictors:
        each.close()


def test_closed_predictors_give_back_adapter_and_base(
    lively: Path, adapters: tuple[Path, Path]
) -> None:
    key = predict_bases.base_key(str(lively))
    loads = predict_bases.BASE_LOADS[key]
    first, second = (GenerationPredictor(str(folder)) for folder in adapters)
    shared = first.base
    gone = first.adapter
    first.close()
    second.generate(chat("hi", max_tokens=2))  # adapters nobody uses go at the next use
    assert gone not in shared.model.peft_config
    assert second.adapter in shared.model.peft_config
    second.close()
    with predict_bases.loaded_bases() as cached:
        assert key not in cached
    again = GenerationPredictor(str(lively))
    assert predict_bases.BASE_LOADS[key] == loads + 2
    again.close()


def long_chat() -> list[dict[str, str]]:
    turns = [{"role": "system", "content": "you are a weather bot"}]
    for number in range(40):
        turns.append({"role": "user", "content": f"question {number} about the weather"})
        turns.append({"role": "assistant", "content": f"answer {number} it is sunny"})
    turns.append({"role": "user", "content": "and tomorrow"})
    return turns


def test_over_long_prompt_is_rejected_with_the_numbers(lively: Path) -> None:
    predictor = GenerationPredictor(str(lively), context_policy="reject")
    assert predictor.context == 256  # the tiny Llama's max_position_embeddings
    request = GenerationInput(messages=long_chat(), max_tokens=16)  # type: ignore[arg-type]
    with pytest.raises(Invalid, match=r"the prompt has \d+ tokens and max_tokens is 16") as err:
        predictor.generate(request)
    assert "context of 256 tokens" in err.value.message
    with pytest.raises(Invalid, match="context of 256"):
        predictor.stream(request)  # before the first chunk
    fits = predictor.generate(chat("hi", max_tokens=16))
    assert not fits.truncated
    # the request may ask for truncation itself
    asked = request.model_copy(update={"context_policy": "truncate"})
    assert predictor.generate(asked).truncated
    predictor.close()


def test_over_long_prompt_is_truncated_from_the_oldest_turns(
    predictor: GenerationPredictor,
) -> None:
    messages = long_chat()
    request = GenerationInput(messages=messages, max_tokens=16)  # type: ignore[arg-type]
    got = predictor.generate(request)
    assert got.truncated
    assert got.prompt_tokens + 16 <= predictor.context
    tokenizer = predictor.base.tokenizer
    fitted = fit_prompt(
        tokenizer, request, context=predictor.context, max_new_tokens=16, policy="truncate"
    )
    kept = tokenizer.decode(fitted.ids)
    assert kept.startswith("<|im_start|>system\nyou are a weather bot<|im_end|>")
    assert kept.endswith("<|im_start|>user\nand tomorrow<|im_end|>\n<|im_start|>assistant\n")
    assert "question 0 " not in kept and "question 39 " in kept
    assert kept.split("<|im_end|>\n")[1].startswith("<|im_start|>user")  # a user turn first
    assert got.prompt_tokens == len(fitted.ids)
    # only as much was dropped as needed: one more exchange would not have fit
    first_kept = next(n for n in range(40) if f"question {n} " in kept)
    one_more = [messages[0], *messages[1 + 2 * (first_kept - 1) :]]
    longer = GenerationInput(messages=one_more, max_tokens=16)  # type: ignore[arg-type]
    with pytest.raises(Invalid, match="context of 256"):
        fit_prompt(tokenizer, longer, context=256, max_new_tokens=16, policy="reject")


def test_one_huge_message_keeps_its_end(predictor: GenerationPredictor) -> None:
    words = " ".join(f"word{n}" for n in range(400)) + " the end"
    request = chat(words, max_tokens=200)  # with 200 to generate, the prompt keeps half
    got = predictor.generate(request)
    assert got.truncated
    assert got.prompt_tokens + got.completion_tokens <= predictor.context
    fitted = fit_prompt(
        predictor.base.tokenizer, request, context=256, max_new_tokens=200, policy="truncate"
    )
    kept = predictor.base.tokenizer.decode(fitted.ids)
    # the message's start was cut, not the template around it
    assert kept.startswith("<|im_start|>user\n")
    assert kept.endswith("the end<|im_end|>\n<|im_start|>assistant\n")
    assert "word0 " not in kept
    assert 100 <= len(fitted.ids) <= 128
    assert fitted.max_new_tokens == min(200, 256 - len(fitted.ids))


def test_long_plain_prompt_keeps_its_last_tokens(no_template: Path) -> None:
    predictor = GenerationPredictor(str(no_template), max_context=64)
    prompt = " ".join(f"w{n}" for n in range(200))
    got = predictor.generate(GenerationInput(prompt=prompt, max_tokens=8))
    assert got.truncated and got.prompt_tokens == 56
    predictor.close()


def test_max_tokens_is_capped_by_the_predictor(lively: Path) -> None:
    predictor = GenerationPredictor(str(lively), max_new_tokens=3)
    got = predictor.generate(chat("tell me a story", max_tokens=50))
    assert got.completion_tokens == 3 and got.finish_reason == "length"
    predictor.close()


def test_requests_are_bounded_at_the_edge() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 4096"):
        GenerationInput(prompt="x", max_tokens=10**6)
    with pytest.raises(ValidationError, match="either messages or prompt"):
        GenerationInput(prompt="x", messages=[{"role": "user", "content": "y"}])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="either messages or prompt"):
        GenerationInput()
    with pytest.raises(ValidationError, match="200000"):
        GenerationInput(messages=[{"role": "user", "content": "x" * 150_000}] * 2)  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="1 to 64 characters"):
        GenerationInput(prompt="x", stop=[""])
    with pytest.raises(ValidationError, match="role"):
        GenerationInput(messages=[{"role": "tool", "content": "y"}])  # type: ignore[list-item]


def test_seeded_sampling_repeats(predictor: GenerationPredictor) -> None:
    request = chat("tell me a story", max_tokens=16, temperature=1.0, seed=7)
    first = predictor.generate(request)
    assert predictor.generate(request) == first
    others = {predictor.generate(request.model_copy(update={"seed": s})).text for s in range(5)}
    assert len(others) > 1  # the seed matters: this is sampling


def test_missing_or_pickled_models_are_refused(tmp_path: Path, lively: Path) -> None:
    with pytest.raises(Invalid, match="no model at"):
        GenerationPredictor(str(tmp_path / "nothing-here"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(lively / name, pickled)
    model = AutoModelForCausalLM.from_pretrained(lively)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(Invalid, match="no safetensors weights"):
        GenerationPredictor(str(pickled))
    adapter = tmp_path / "pickled-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(Invalid, match=r"adapter_model\.safetensors"):
        GenerationPredictor(str(adapter))


def test_prepare_for_serving_warms_up(lively: Path, tmp_path: Path) -> None:
    predictor = GenerationPredictor(str(lively))
    assert isinstance(predictor, Predictor)
    predictor.prepare_for_serving(get_settings(data_dir=tmp_path, serving_threads=1))
    assert predictor.threads == 1
    predictor.close()
