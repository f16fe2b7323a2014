"""The trials of a search, one after another in the search's process, each a child job.

A trial is an Optuna trial and a job row (kind `trial`, parent = the search) at once: the
row holds its values, its metric series and its validation score, so the API and the
dashboard show it like any run. The task reports each validation score as `eval_<primary>`;
`TrialSink` hands those to Optuna and, once the pruner says stop, answers `cancelled()` with
True, which is how every task already stops training.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from sqlalchemy import select

from fineloop.errors import FineloopError
from fineloop.jobs import store as jobs
from fineloop.jobs.search_space import SearchConfig, SearchParam
from fineloop.jobs.sink import Stage, StoreSink
from fineloop.store import Store
from fineloop.store.schema import Job, Project
from fineloop.tasks.base import BuiltSnapshot, JobCancelled, ProgressSink, Task

VALIDATION = "validation"


def distribution(param: SearchParam) -> BaseDistribution:
    if param.choices is not None:
        return CategoricalDistribution(param.choices)
    assert param.low is not None and param.high is not None
    if param.type == "int":
        step = int(param.step or 1)
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=step)
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


class TrialSink:
    """A trial's reports: into its own job row and onto the search's bar. Each validation
    score goes to Optuna (step = the how-manieth evaluation, so trials of different batch
    sizes compare); once the pruner says stop, the trial is told it is cancelled."""

    def __init__(self, own: StoreSink, search: Stage, trial: optuna.Trial, metric: str) -> None:
        self.own, self.search, self.trial, self.metric_name = own, search, trial, metric
        self.evaluations = 0
        self.pruned_at: tuple[int, float] | None = None

    def progress(self, fraction: float, message: str = "") -> None:
        self.own.progress(fraction, message)
        self.search.progress(fraction, f"trial {self.trial.number}: {message}" if message else "")

    def metric(self, name: str, step: int, value: float) -> None:
        self.own.metric(name, step, value)
        # step 0 is the starting model, the same for every trial: nothing to judge
        if name != self.metric_name or step <= 0 or self.pruned_at is not None:
            return
        self.evaluations += 1
        self.trial.report(value, self.evaluations)
        if self.trial.should_prune():
            self.pruned_at = (self.evaluations, value)
            self.own.log(f"pruned at evaluation {self.evaluations}: {name} {value:.4f}")

    def log(self, message: str) -> None:
        self.own.log(message)

    def cancelled(self) -> bool:
        return self.pruned_at is not None or self.search.cancelled() or self.own.cancelled()


@dataclass(frozen=True)
class Kept:
    """The leading trial's model, kept on disk until a better one replaces it."""

    number: int
    value: float
    model: Path
    folder: Path


@dataclass
class Trials:
    """Runs a search's trials in order, keeping only the best model so far."""

    store: Store
    sink: ProgressSink
    job: Job
    task: Task
    snapshot: BuiltSnapshot
    parent_model: str
    fixed: dict[str, Any]
    space: dict[str, SearchParam]
    search: SearchConfig
    study: optuna.Study
    scratch: Path
    stage: tuple[float, float]
    kept: Kept | None = None
    first_error: str | None = None

    @property
    def metric(self) -> str:
        return self.task.primary_metric

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.task.greater_is_better else value < than

    def run(self) -> Kept | None:
        """Run trials until `n_trials` have ended (counting an earlier attempt's) or the
        timeout passed; a cancel of the search ends the running trial and raises."""
        self._end_stale()
        deadline = self.search.timeout_seconds
        stop_at = None if deadline is None else time.monotonic() + deadline
        distributions = {name: distribution(p) for name, p in self.space.items()}
        done = sum(1 for t in self.study.trials if t.state.is_finished())
        while done < self.search.n_trials:
            if stop_at is not None and time.monotonic() >= stop_at:
                self.sink.log(f"timeout: {deadline} s passed, no new trial after {done}")
                break
            if self.sink.cancelled():
                raise JobCancelled
            self.one(self.study.ask(distributions), done)
            done += 1
        return self.kept

    def one(self, trial: optuna.Trial, index: int) -> None:
        params = dict(trial.params)
        config = self.task.train_config({**self.fixed, **params})
        config_json = config.model_dump(mode="json")
        row = self._create_row(trial.number, params, config_json)
        trial.set_user_attr("job_id", row)
        own = StoreSink(self.store, row)
        start, end = self.stage
        span = (end - start) / self.search.n_trials
        bar = Stage(self.sink, start + span * index, start + span * (index + 1), "trial")
        sink = TrialSink(own, bar, trial, f"eval_{self.metric}")
        folder = self.scratch / f"trial-{trial.number}"
        folder.mkdir(parents=True, exist_ok=True)
        self.sink.log(f"trial {trial.number} (job {row}): {params}")
        value: float | None = None
        error: str | None = None
        try:
            model = self.task.train(self.snapshot.path, self.parent_model, config, folder, sink)
            if not sink.cancelled():
                scores = self.task.evaluate(str(model), self.snapshot.path, VALIDATION)
                value = float(scores.metrics[self.metric])
        except JobCancelled:
            pass
        except Exception as exc:  # one bad set of values fails its trial, not the search
            if not sink.cancelled():
                error = (
                    exc.message
                    if isinstance(exc, FineloopError)
                    else f"{type(exc).__name__}: {exc}"
                )
        except BaseException:  # a signal stops the search's process: a cancel, or not
            with self.store.read() as session:
                asked = jobs.cancel_requested(session, self.job.id)
            ending = jobs.CANCELLED if asked else jobs.FAILED
            self._end(trial, row, own, TrialState.FAIL, ending, "the search was stopped")
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if self.sink.cancelled():
            self._end(trial, row, own, TrialState.FAIL, jobs.CANCELLED, "the search was cancelled")
            shutil.rmtree(folder, ignore_errors=True)
            raise JobCancelled
        if sink.pruned_at is not None:
            at, score = sink.pruned_at
            message = f"pruned at evaluation {at}: validation {self.metric} {score:.4f}"
            self._end(trial, row, own, TrialState.PRUNED, jobs.CANCELLED, message, score)
        elif error is not None:
            self.first_error = self.first_error or error
            self._end(
                trial, row, own, TrialState.FAIL, jobs.FAILED, f"failed: {error}", error=error
            )
            self.sink.log(f"trial {trial.number} failed: {error}")
        elif value is None:
            self._end(trial, row, own, TrialState.FAIL, jobs.CANCELLED, "cancelled by hand")
        elif self._end(trial, row, own, TrialState.COMPLETE, jobs.SUCCEEDED, "", value):
            self._keep(trial.number, value, model, folder)
            return
        shutil.rmtree(folder, ignore_errors=True)

    def _keep(self, number: int, value: float, model: Path, folder: Path) -> None:
        self.sink.metric(f"trial_{self.metric}", number, value)
        if self.kept is None or self._better(value, self.kept.value):
            if self.kept is not None:
                shutil.rmtree(self.kept.folder, ignore_errors=True)
            self.kept = Kept(number, value, model, folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        self.sink.metric(f"best_{self.metric}", number, self.kept.value)
        self.sink.log(
            f"trial {number}: validation {self.metric} {value:.4f} "
            f"(best: trial {self.kept.number}, {self.kept.value:.4f})"
        )

    def _create_row(self, number: int, params: dict[str, Any], config: dict[str, Any]) -> int:
        body = {"search_job": self.job.id, "study": self.study.study_name, "trial": number}
        body |= {"params": params, "train": config}
        with self.store.write() as session:
            project = session.get(Project, self.job.project_id)
            assert project is not None
            row = jobs.create_job(session, project, jobs.TRIAL, body, claimed_by=self.job.worker)
            row.parent_id, row.snapshot_id = self.job.id, self.snapshot.id
            session.flush()
            return row.id

    def _end(
        self,
        trial: optuna.Trial,
        row: int,
        own: StoreSink,
        state: TrialState,
        job_state: str,
        message: str,
        value: float | None = None,
        *,
        error: str | None = None,
    ) -> bool:
        """End the row, then tell Optuna; False if a cancel of the row beat its success."""
        own.close()  # pending metric points are written while the row still runs
        result = {"trial": trial.number, "state": state.name.lower(), "value": value}
        result |= {"params": dict(trial.params), "study": self.study.study_name}
        if state == TrialState.COMPLETE:
            message = f"trial {trial.number}: validation {self.metric} {value:.4f}"
        with self.store.write() as session:
            ended = jobs.finish(session, row, job_state, message, error=error, result=result)
            if not ended and job_state == jobs.SUCCEEDED:
                result["state"] = "fail"
                jobs.finish(session, row, jobs.CANCELLED, "cancelled by hand", result=result)
        if not ended and job_state == jobs.SUCCEEDED:
            state = TrialState.FAIL
        if state == TrialState.COMPLETE:
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=state)
        return state == TrialState.COMPLETE

    def _end_stale(self) -> None:
        """An earlier attempt of this search died mid-trial: end what it left running."""
        for stale in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study.tell(stale.number, state=TrialState.FAIL)
        with self.store.write() as session:
            rows = session.scalars(
                select(Job.id).where(Job.parent_id == self.job.id, Job.state == jobs.RUNNING)
            ).all()
            for row in rows:
                reason = "left running by an earlier attempt of its search"
                jobs.finish(session, row, jobs.FAILED, f"failed: {reason}", error=reason)
