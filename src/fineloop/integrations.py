"""Experiment trackers a training run can report to (the Trainer's `report_to`).

Checked by import spec only, without importing transformers or the tracker, so the API can
refuse `report_to: ["wandb"]` with a 422 naming the missing package before a job is queued,
instead of the job failing an hour later in the worker.
"""

from __future__ import annotations

import importlib.util

# transformers' integration name -> (import names that satisfy it, the package to install).
# A subset of transformers.integrations.INTEGRATION_TO_CALLBACK (a test keeps it that way).
REPORTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "mlflow": (("mlflow",), "mlflow"),
    "wandb": (("wandb",), "wandb"),
}


def installed(name: str) -> bool:
    """Whether the tracker `name` can be imported here."""
    modules, _ = REPORTERS[name]
    return any(importlib.util.find_spec(module) is not None for module in modules)


def check_report_to(names: list[str]) -> list[str]:
    """The trackers asked for, deduplicated in order; ValueError saying what to fix when one
    is unknown or its package is not installed."""
    chosen = list(dict.fromkeys(names))
    for name in chosen:
        if name not in REPORTERS:
            raise ValueError(
                f"unknown report_to integration {name!r}; valid: {', '.join(sorted(REPORTERS))}"
            )
        if not installed(name):
            package = REPORTERS[name][1]
            raise ValueError(
                f"report_to {name!r} needs the package {package}, which is not installed "
                f"(pip install {package}), or leave it out"
            )
    return chosen
