"""A hyperparameter search job: one snapshot, Optuna trials as child jobs, the best trial
registered like any training run.

The study lives in fineloop's own database, through Optuna's RDB storage on the store's URL
(SQLite or PostgreSQL alike), named `fineloop-{project}-job{id}`; a retried job reopens it
and counts the trials already ended. Trials maximise the task's primary metric on the
validation split and are pruned on it (see `search_trials`). The best trial's model is
evaluated on the test split, gated and registered by `evaluate_and_register`, the same code
that ends a training job; its version's config holds the chosen values and the study name.
"""

from __future__ import annotations

import shutil
from typing import Any

import optuna
from optuna.pruners import BasePruner, MedianPruner, NopPruner, ThresholdPruner
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import make_url

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.errors import FineloopError, Invalid
from fineloop.jobs import store as jobs
from fineloop.jobs.search_space import PrunerConfig, SearchConfig, check_search
from fineloop.jobs.search_trials import VALIDATION, Trials
from fineloop.jobs.sink import Stage
from fineloop.jobs.train import Candidate, evaluate_and_register, starting_point
from fineloop.store import Store
from fineloop.store.projects import training_policy_of
from fineloop.store.schema import Project
from fineloop.tasks import get_task
from fineloop.tasks.base import JobCancelled, ProgressSink

SNAPSHOT, TRIALS, EVALUATE = (0.0, 0.1), (0.1, 0.85), (0.85, 0.97)


def study_name(project: str, job_id: int) -> str:
    return f"fineloop-{project}-job{job_id}"


def run_search(store: Store, settings: Settings, job_id: int, sink: ProgressSink) -> dict[str, Any]:
    """Search the job's space from the champion; register the best trial's model, gated."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the job's log tells the story
    with store.read() as session:
        job = jobs.get_job(session, job_id)
        project = session.get(Project, job.project_id)
        assert project is not None
        search = SearchConfig.parse(dict(job.config.get("search") or {}))
        earlier = job.snapshot_id  # set by an earlier attempt: a retry searches the same data
    task = get_task(project.task)
    policy = training_policy_of(project)
    space = check_search(task, policy.train, search)
    fixed = {**policy.train, **search.train}
    base, champion, snapshot = starting_point(
        store, settings, sink, job_id, project, task, policy, reuse=earlier, at=SNAPSHOT[0]
    )
    if not snapshot.splits.get(VALIDATION):
        raise Invalid(
            "a search compares trials on the validation split, and this snapshot has none; "
            "send more feedback",
            field="snapshot",
        )
    _check(sink)

    name = study_name(project.name, job_id)
    parent = artifacts.fetch(settings, champion.artifact_uri)  # a local path to train from
    storage = open_storage(settings.resolved_database_url)
    scratch = artifacts.scratch_dir(settings, project.name, f"job{job_id}")
    try:
        study = open_study(
            storage, name, search, job_id, task.primary_metric, task.greater_is_better
        )
        sink.log(f"study {name}: {search.n_trials} trials over {', '.join(space)}")
        trials = Trials(
            store, sink, job, task, snapshot, parent, fixed, space, search,
            study, scratch, TRIALS,
        )  # fmt: skip
        kept = trials.run()
        best = _best(study, trials.first_error)
        config = task.train_config({**fixed, **best.params})
        if kept is None or kept.number != best.number:
            sink.log(
                f"trial {best.number} leads; its model went with an earlier attempt: retraining"
            )
            stage = Stage(sink, TRIALS[1], EVALUATE[0], f"retraining trial {best.number}")
            model = task.train(snapshot.path, parent, config, scratch / "best", stage)
        else:
            model = kept.model
        _check(sink)
        summary = _summary(study, best, job_id, task.primary_metric, space)
        candidate = Candidate(
            model,
            {
                "train": config.model_dump(mode="json"),
                "overrides": {**search.train, **best.params},
                "search": summary,
            },
            {"search": summary},
        )
        return evaluate_and_register(
            store, settings, sink, job_id, project, task, policy, base, champion, snapshot,
            candidate, stage=EVALUATE,
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        storage.remove_session()
        storage.engine.dispose()


def _check(sink: ProgressSink) -> None:
    if sink.cancelled():
        raise JobCancelled


def open_storage(url: str) -> RDBStorage:
    """Optuna's tables beside fineloop's, in the same database.

    fineloop's Alembic owns the `alembic_version` table there, which Optuna's own schema
    check would read as its version: the check is skipped (its tables are created as
    needed). On SQLite, Optuna's transactions take the write lock up front as fineloop's do,
    so a concurrent writer makes it wait instead of failing mid-transaction."""
    if make_url(url).get_backend_name() != "sqlite":
        return RDBStorage(url, {"pool_pre_ping": True}, skip_compatibility_check=True)
    options = {"connect_args": {"timeout": 30, "isolation_level": None}}
    storage = RDBStorage(url, options, skip_compatibility_check=True)

    @event.listens_for(storage.engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return storage


def open_study(
    storage: RDBStorage,
    name: str,
    search: SearchConfig,
    job_id: int,
    metric: str,
    greater_is_better: bool = True,
) -> optuna.Study:
    """Create the study (or reopen it when the job is retried); queue the fixed trials.
    The study maximises the metric, or minimises it when lower is better (a loss)."""
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize" if greater_is_better else "minimize",
        sampler=sampler(search),
        pruner=pruner(search.pruner, greater_is_better),
        load_if_exists=True,
    )
    if not study.trials:
        study.set_user_attr("fineloop_job", job_id)
        study.set_user_attr("metric", f"{VALIDATION} {metric}")
        for values in search.enqueue:
            study.enqueue_trial(values, skip_if_exists=True)
    return study


def sampler(search: SearchConfig) -> BaseSampler:
    if search.sampler == "random":
        return RandomSampler(seed=search.seed)
    return TPESampler(seed=search.seed)


def pruner(config: PrunerConfig, greater_is_better: bool = True) -> BasePruner:
    if config.kind == "none":
        return NopPruner()
    if config.kind == "threshold":  # `lower` is the worst score let through
        if greater_is_better:
            return ThresholdPruner(lower=config.lower, n_warmup_steps=config.warmup_evaluations)
        return ThresholdPruner(upper=config.lower, n_warmup_steps=config.warmup_evaluations)
    return MedianPruner(
        n_startup_trials=config.startup_trials, n_warmup_steps=config.warmup_evaluations
    )


def _best(study: optuna.Study, first_error: str | None) -> FrozenTrial:
    counts = _counts(study)
    if not counts["complete"]:
        why = f"; first failure: {first_error}" if first_error else ""
        raise FineloopError(
            f"no trial finished ({counts['pruned']} pruned, {counts['failed']} failed), "
            f"so there is nothing to register{why}"
        )
    return study.best_trial


def _counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
    }


def _summary(
    study: optuna.Study, best: FrozenTrial, job_id: int, metric: str, space: dict[str, Any]
) -> dict[str, Any]:
    """What the version and the job record of the search: the winner and how it won."""
    return {
        "study": study.study_name,
        "job_id": job_id,
        "metric": f"{VALIDATION} {metric}",
        "best_trial": best.number,
        "best_trial_job": best.user_attrs.get("job_id"),
        "params": best.params,
        "value": best.value,
        "trials": _counts(study),
        "space": {k: v.model_dump(exclude_defaults=True) for k, v in space.items()},
    }
