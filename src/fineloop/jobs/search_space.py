"""What a hyperparameter search explores, as data: ranges over the task's train config keys.

A search never names code: each parameter is a range or a list of choices for one key of
the task's training config, and every value is checked against that config before the job
is queued (422 naming the field). The task may offer a default space (`search_space()`);
the request's `space` adds to it, narrows it, or drops a key (null). Plain pydantic, no
Optuna import: the API validates with it, and `start_search` queues the job.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from fineloop.data import read_project
from fineloop.errors import Invalid, validated
from fineloop.jobs import store as jobs
from fineloop.store import Store
from fineloop.store.projects import get_project, training_policy_of
from fineloop.store.schema import Job
from fineloop.tasks import get_task
from fineloop.tasks.base import Task
from fineloop.validation import INPUT, JsonObject, Seed

Choice = str | int | float | bool | None


class SearchParam(BaseModel):
    """One hyperparameter: a float or int range (optionally on a log scale), or choices."""

    model_config = INPUT

    type: Literal["float", "int", "categorical"] = Field(
        description="float or int: sample from [low, high]; categorical: one of `choices`."
    )
    low: float | None = Field(default=None, description="Smallest value (float and int).")
    high: float | None = Field(default=None, description="Largest value (float and int).")
    log: bool = Field(
        default=False, description="Sample on a log scale (learning rates); needs low > 0."
    )
    step: float | None = Field(
        default=None, gt=0, description="Only multiples of this above low (int default: 1)."
    )
    choices: list[Choice] | None = Field(
        default=None, min_length=1, description="categorical: the values to choose from."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if self.choices is None:
                raise ValueError("a categorical parameter needs `choices`")
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError("a categorical parameter takes only `choices`")
            return self
        if self.choices is not None:
            raise ValueError(f"an {self.type} parameter takes low/high, not `choices`")
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter needs `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        if self.type == "int":
            values = (self.low, self.high, self.step or 1)
            if not all(float(v).is_integer() for v in values):
                raise ValueError("an int parameter needs whole numbers for low, high and step")
            if self.log and (self.step or 1) != 1:
                raise ValueError("a log-scale int range takes no step")
        elif self.log and self.step is not None:
            raise ValueError("a log-scale range takes no step")
        return self

    def probes(self) -> list[Choice]:
        """Values that must all be valid training values: both ends (and the middle of a
        float range, which catches a float range over an integer key), or every choice."""
        if self.choices is not None:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high, (self.low + self.high) / 2]


class PrunerConfig(BaseModel):
    """When to stop a trial early, judged on its validation metric at each evaluation."""

    model_config = INPUT

    kind: Literal["median", "threshold", "none"] = Field(
        default="median",
        description="median: stop a trial whose score at an evaluation is below the median "
        "of earlier trials at that evaluation; threshold: stop one worse than `lower` (below "
        "it, or above it for a metric where lower is better); none.",
    )
    startup_trials: int = Field(
        default=3, ge=0, le=1000, description="median: trials that finish before any is pruned."
    )
    warmup_evaluations: int = Field(
        default=0, ge=0, le=1000, description="Evaluations of a trial never judged."
    )
    lower: float | None = Field(
        default=None, description="threshold: a score worse than this at an evaluation stops it."
    )

    @model_validator(mode="after")
    def _lower_for_threshold(self) -> PrunerConfig:
        if (self.kind == "threshold") != (self.lower is not None):
            raise ValueError("`lower` is required by, and only used with, kind threshold")
        return self


class SearchConfig(BaseModel):
    """A hyperparameter search: what to explore, for how long, and how to judge trials."""

    model_config = INPUT

    space: dict[str, SearchParam | None] = Field(
        default_factory=dict,
        description="Parameters by train config key, over the task's default space; null "
        'drops a default key. E.g. {"learning_rate": {"type": "float", "low": 1e-5, '
        '"high": 1e-4, "log": true}, "loss": null}.',
    )
    n_trials: int = Field(default=10, ge=1, le=1000, description="Trials to run (at most).")
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Start no new trial after this many seconds (a running one finishes).",
    )
    pruner: PrunerConfig = Field(
        default_factory=PrunerConfig, description="Stopping bad trials early."
    )
    sampler: Literal["tpe", "random"] = Field(
        default="tpe", description="How Optuna picks the next trial's values."
    )
    seed: Seed = Field(default=13, description="The sampler's seed (same seed, same trials).")
    train: JsonObject = Field(
        default_factory=dict,
        description="Fixed training config values for every trial, over the project's "
        'training policy (e.g. {"max_steps": 200}); not searched.',
    )
    enqueue: list[JsonObject] = Field(
        default_factory=list,
        max_length=100,
        description="Trials to run first with these values (e.g. today's config as a "
        "baseline); keys left out are sampled.",
    )

    @classmethod
    def parse(cls, body: dict[str, Any]) -> SearchConfig:
        """Validate a request's search config; problems become one `Invalid` naming the field."""
        return validated(cls, body)


def resolve_space(task: Task, config: SearchConfig) -> dict[str, SearchParam]:
    """The task's default space with the request's changes; an empty one is refused."""
    space = {k: SearchParam.model_validate(v) for k, v in task.search_space().items()}
    for name, param in config.space.items():
        if param is None:
            space.pop(name, None)
        else:
            space[name] = param
    if not space:
        raise Invalid(
            f"nothing to search: the {task.name} task has no default search space; "
            'give `space`, e.g. {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}}',
            field="space",
        )
    return dict(sorted(space.items()))


def check_search(
    task: Task, policy_train: dict[str, Any], config: SearchConfig
) -> dict[str, SearchParam]:
    """Every value a trial could get is a valid training config for the task, or 422."""
    fixed = {**policy_train, **config.train}
    task.train_config(fixed)  # a bad fixed value: train.<key>
    space = resolve_space(task, config)
    for name, param in space.items():
        if name in config.train:
            raise Invalid(
                f"space.{name}: {name} is both fixed in `train` and searched; drop one",
                field=f"space.{name}",
            )
        for value in param.probes():
            _try(task, {**fixed, name: value}, f"space.{name}", f"value {value!r}")
    for index, values in enumerate(config.enqueue):
        where = f"enqueue.{index}"
        unknown = sorted(set(values) - set(space))
        if unknown:
            raise Invalid(
                f"{where}: {', '.join(unknown)} not in the search space "
                f"({', '.join(space)}); fix it with `train` instead",
                field=f"{where}.{unknown[0]}",
            )
        _try(task, {**fixed, **values}, where, "these values")
    return space


def _try(task: Task, values: dict[str, Any], field: str, what: str) -> None:
    try:
        task.train_config(values)
    except Invalid as error:
        raise Invalid(
            f"{field}: {what} is not a valid training config: {error.message}", field=field
        ) from None


def start_search(
    store: Store,
    project_name: str,
    config: SearchConfig | dict[str, Any] | None = None,
    *,
    claimed_by: str | None = None,
) -> Job:
    """Validate and create a search job: queued for a worker, or running in `claimed_by`.

    Refused up front like a training job: a bad space (422 naming the field), too few
    examples, or a training or search job of the project already active (409)."""
    if not isinstance(config, SearchConfig):
        config = SearchConfig.parse(config or {})
    with store.read() as session:
        project = get_project(session, project_name)
    task = get_task(project.task)
    policy = training_policy_of(project)
    check_search(task, policy.train, config)
    task.check_trainable(read_project(store, project))
    with store.write() as session:
        project = get_project(session, project_name)
        return jobs.create_job(
            session,
            project,
            jobs.SEARCH,
            {"search": config.model_dump(mode="json")},
            claimed_by=claimed_by,
            max_attempts=policy.max_attempts,  # a retry reopens the study where it stopped
        )
