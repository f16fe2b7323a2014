"""Base models: only from the models root, the packaged models or the hub; safetensors only.

The tiny models tests build live under pytest's base temp, which the autouse fixture makes
the models root (FINELOOP_MODELS_ROOT)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fineloop import artifacts, base_models
from fineloop.config import Settings, get_settings
from fineloop.errors import Invalid
from fineloop.tasks.embedding.config import packaged_minilm_path


def pickle_only(model: Path) -> Path:
    """The same model with its weights as a pickled `pytorch_model.bin` and no safetensors."""
    import torch
    from safetensors.torch import load_file

    weights = model / "model.safetensors"
    torch.save(load_file(str(weights)), model / "pytorch_model.bin")
    weights.unlink()
    return model


def outside(settings: Settings) -> str:
    return (
        f"base model must be under {settings.resolved_models_root} (FINELOOP_MODELS_ROOT) "
        "or a packaged model"
    )


def test_the_test_models_root_is_pytest_base_temp(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert settings.resolved_models_root == tmp_path_factory.getbasetemp().resolve()


def test_default_models_root_is_in_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINELOOP_MODELS_ROOT")
    settings = get_settings(data_dir="/srv/fineloop")
    assert settings.resolved_models_root == Path("/srv/fineloop/models")


def test_a_pickle_only_model_is_refused(settings: Settings, tiny_model: Path) -> None:
    pickle_only(tiny_model)
    with pytest.raises(Invalid) as refused:
        base_models.resolve(settings, str(tiny_model))
    assert "pytorch_model.bin are a pickle" in refused.value.message
    assert "allow_pickle_weights" in refused.value.message


def test_a_pickle_only_model_loads_when_the_setting_allows_it(
    settings: Settings, tiny_model: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    pickle_only(tiny_model)
    allowing = settings.model_copy(update={"allow_pickle_weights": True})
    resolved = base_models.resolve(allowing, str(tiny_model))
    assert resolved == str(tiny_model)
    assert SentenceTransformer(resolved, device="cpu").encode(["reset password"]).shape == (1, 32)


def test_pickles_beside_safetensors_are_fine(settings: Settings, tiny_model: Path) -> None:
    (tiny_model / "training_args.bin").write_bytes(b"not read")
    (tiny_model / "optimizer.pt").write_bytes(b"not read")
    assert base_models.resolve(settings, str(tiny_model)) == str(tiny_model)


def test_a_weights_file_that_is_a_pickle_is_refused(settings: Settings, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.bin"
    checkpoint.write_bytes(b"\x80\x04 a pickle")
    with pytest.raises(Invalid, match=r"model\.bin are a pickle"):
        base_models.resolve(settings, str(checkpoint))


@pytest.mark.parametrize(
    "name", ["/etc", "/etc/passwd", "/no/such/folder", "/tmp/../etc", "file:///etc", "s3://b/m"]
)
def test_paths_outside_the_roots_get_one_message_whether_or_not_they_exist(
    settings: Settings, name: str
) -> None:
    with pytest.raises(Invalid) as refused:
        base_models.resolve(settings, name)
    assert refused.value.message == outside(settings)
    assert refused.value.field == "base_model"


def test_relative_names_cannot_climb_out_of_the_models_root(settings: Settings) -> None:
    with pytest.raises(Invalid) as refused:
        base_models.resolve(settings, "../../../../etc")
    assert refused.value.message == outside(settings)


def test_the_packaged_model_and_models_root_paths_are_accepted(
    settings: Settings, tiny_model: Path
) -> None:
    assert base_models.resolve(settings, packaged_minilm_path()) == packaged_minilm_path()
    assert base_models.resolve(settings, str(tiny_model)) == str(tiny_model)
    relative = tiny_model.relative_to(settings.resolved_models_root)
    assert base_models.resolve(settings, str(relative)) == str(tiny_model)


def test_a_missing_folder_inside_the_root_says_so_at_the_edge(settings: Settings) -> None:
    missing = settings.resolved_models_root / "a" / "b" / "c"
    with pytest.raises(Invalid, match="no model at"):
        base_models.check(settings, str(missing))
    assert base_models.resolve(settings, str(missing)) == str(missing)  # the loader says why


def test_a_name_too_long_for_the_file_system_is_a_missing_model(settings: Settings) -> None:
    for name in ("é" * 300, "org/" + "m" * 300, str(settings.resolved_models_root / ("x" * 300))):
        with pytest.raises(Invalid, match="no model at"):
            base_models.check(settings, name)


def test_hub_ids_are_left_to_the_hub_and_pickle_only_repos_refused(settings: Settings) -> None:
    base_models.check(settings, "sentence-transformers/all-MiniLM-L6-v2")  # no network
    base_models.hub_files_allowed(settings, "org/m", ["config.json", "model.safetensors"])
    with pytest.raises(Invalid, match=r"org/m/pytorch_model\.bin are a pickle"):
        base_models.hub_files_allowed(settings, "org/m", ["config.json", "pytorch_model.bin"])
    allowing = settings.model_copy(update={"allow_pickle_weights": True})
    base_models.hub_files_allowed(allowing, "org/m", ["config.json", "pytorch_model.bin"])


def test_artifacts_fineloop_wrote_load_and_base_models_go_through_the_check(
    settings: Settings, tiny_model: Path
) -> None:
    version = Path(artifacts.root(settings)) / "faq" / "models" / "v1"
    version.parent.mkdir(parents=True)
    shutil.copytree(tiny_model, version)
    (version / "extra.pt").write_bytes(b"fineloop wrote it")  # never refused here
    assert artifacts.fetch(settings, str(version)) == str(version)
    assert artifacts.fetch(settings, str(tiny_model)) == str(tiny_model)
    with pytest.raises(Invalid) as refused:
        artifacts.fetch(settings, "/etc")
    assert refused.value.message == outside(settings)


def test_the_api_refuses_outside_paths_before_storing_anything(
    client: TestClient, settings: Settings, tiny_model: Path
) -> None:
    answers = [
        client.post("/v1/projects", json={"name": f"p{i}", "task": "embedding", "base_model": b})
        for i, b in enumerate(["/etc", "/no/such/thing"])
    ]
    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].json()["message"] == answers[1].json()["message"] == outside(settings)
    assert client.get("/v1/projects").json() == []

    pickle_only(tiny_model)
    refused = client.post(
        "/v1/projects", json={"name": "p", "task": "embedding", "base_model": str(tiny_model)}
    )
    assert refused.status_code == 422 and "pickle" in refused.json()["message"]
    assert client.get("/v1/projects").json() == []


def test_the_api_accepts_a_model_under_the_root_and_refuses_a_patch_outside(
    client: TestClient, settings: Settings, tiny_model: Path
) -> None:
    created = client.post(
        "/v1/projects", json={"name": "p", "task": "embedding", "base_model": str(tiny_model)}
    )
    assert created.status_code == 201, created.text
    patched = client.patch("/v1/projects/p", json={"base_model": "/var/lib"})
    assert patched.status_code == 422
    assert patched.json()["message"] == outside(settings)
    assert client.get("/v1/projects/p").json()["base_model"] == str(tiny_model)
