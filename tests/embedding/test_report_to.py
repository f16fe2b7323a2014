"""`report_to`: experiment trackers passed through to the Trainer, refused up front when
unknown or not installed, TensorBoard writing under the job's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fineloop.errors import Invalid
from fineloop.integrations import REPORTERS, check_report_to, installed
from fineloop.tasks.embedding.config import EmbeddingTrainConfig
from fineloop.tasks.embedding.fit import arguments, tensorboard_callback, trainer_reporters
from fineloop.tasks.embedding.losses import get_loss

MISSING = [name for name in sorted(REPORTERS) if not installed(name)]


def test_every_tracker_we_offer_is_one_transformers_knows() -> None:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert set(REPORTERS) <= set(INTEGRATION_TO_CALLBACK)


def test_by_default_the_trainer_reports_to_nothing(tmp_path: Path) -> None:
    config = EmbeddingTrainConfig.parse({})
    assert config.report_to == []
    args = arguments(config, get_loss("mnrl"), tmp_path, bf16=False, evaluate=False)
    assert args.report_to in ([], "none", ["none"])


def test_trackers_are_passed_through_and_tensorboard_is_wired_to_the_job_folder(
    tmp_path: Path,
) -> None:
    # Built without validation: the pass-through must not depend on what is installed here.
    config = EmbeddingTrainConfig.model_construct(report_to=["mlflow", "tensorboard", "wandb"])
    assert trainer_reporters(config) == ["mlflow", "wandb"]
    args = arguments(config, get_loss("mnrl"), tmp_path, bf16=False, evaluate=False)
    assert args.report_to == ["mlflow", "wandb"]


@pytest.mark.skipif(not installed("tensorboard"), reason="tensorboard is not installed")
def test_tensorboard_logs_go_where_fineloop_says(tmp_path: Path) -> None:
    callback = tensorboard_callback(tmp_path / "logs" / "fp32")
    assert callback.logging_dir == str(tmp_path / "logs" / "fp32")  # type: ignore[attr-defined]


def test_an_unknown_tracker_is_invalid_and_lists_the_valid_ones() -> None:
    with pytest.raises(Invalid, match="unknown report_to integration 'neptun'") as error:
        EmbeddingTrainConfig.parse({"report_to": ["neptun"]})
    assert error.value.field == "train.report_to"
    assert "mlflow, tensorboard, wandb" in str(error.value)


@pytest.mark.skipif(not MISSING, reason="every tracker is installed here")
def test_a_tracker_whose_package_is_missing_is_refused_naming_the_package() -> None:
    name = MISSING[0]
    with pytest.raises(ValueError, match=f"needs the package {REPORTERS[name][1]}"):
        check_report_to([name])
    with pytest.raises(Invalid, match=f"pip install {REPORTERS[name][1]}"):
        EmbeddingTrainConfig.parse({"report_to": [name]})


@pytest.mark.skipif(not MISSING, reason="every tracker is installed here")
def test_the_api_answers_a_missing_tracker_with_a_422_before_queueing(
    client: TestClient, tiny_model: Path
) -> None:
    created = client.post(
        "/v1/projects", json={"name": "p", "task": "embedding", "base_model": str(tiny_model)}
    )
    assert created.status_code == 201, created.text
    response = client.post("/v1/projects/p/train", json={"overrides": {"report_to": MISSING[:1]}})
    assert response.status_code == 422, response.text
    assert f"pip install {REPORTERS[MISSING[0]][1]}" in response.text
    assert client.get("/v1/projects/p/jobs").json() == []
