"""`fineloop train PROJECT`: train in the foreground with a progress bar (or queue it).

The foreground run is the same job a server's worker would run, recorded in the store the
same way (so `fineloop jobs show` and the API see it), but executed in this process.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from fineloop.cli.common import ConfigOption, console, err_console, load_settings, opened_store

if TYPE_CHECKING:
    from fineloop.config import Settings
    from fineloop.store import Store
    from fineloop.store.schema import Job


class ProgressBar:
    """A ProgressSink drawing a rich bar with the latest loss and evaluation metric."""

    def __init__(self, progress: Progress) -> None:
        self.bar = progress
        self.task = progress.add_task("starting", total=1.0, metrics="")
        self.latest: dict[str, tuple[str, float]] = {}  # "loss"/"eval" -> (name, value)

    def progress(self, fraction: float, message: str = "") -> None:
        self.bar.update(self.task, completed=fraction, description=message or "running")

    def metric(self, name: str, step: int, value: float) -> None:
        self.latest["loss" if "loss" in name else "eval"] = (name, value)
        shown = []
        for kind in ("loss", "eval"):
            if kind in self.latest:
                label, latest = self.latest[kind]
                shown.append(f"{label} {latest:.4f}")
        self.bar.update(self.task, metrics="  ".join(shown))

    def log(self, message: str) -> None:
        self.bar.console.print(message, style="dim", highlight=False)

    def cancelled(self) -> bool:
        return False


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are read as JSON when they parse (3, 0.1, true, [64, 32])."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r}: use key=value", param_hint="--set")
        try:
            found[key.strip()] = json.loads(text)
        except ValueError:
            found[key.strip()] = text
    return found


@contextmanager
def _signals_end_the_job() -> Iterator[None]:
    """Ctrl-C cancels the job (recorded as cancelled); SIGTERM fails it with the reason."""
    from fineloop.jobs.runner import Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise Terminated("interrupted (Ctrl-C)", cancel=True)

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated("stopped by SIGTERM")

    previous = signal.signal(signal.SIGINT, interrupt), signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def train(
    project: Annotated[str, typer.Argument(help="Project to train.")],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Run here with a progress bar (default), or only queue the job for the "
            "server's worker.",
        ),
    ] = True,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Training config override for this run, key=value (repeatable)."
        ),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            min=1,
            help="Train on this many processes (DDP via torchrun: one per GPU; on a CPU "
            "they share its cores). Default: the train_nproc setting (1).",
        ),
    ] = None,
    launcher: Annotated[
        str | None,
        typer.Option("--launcher", help="torchrun or accelerate (default: train_launcher)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Build a snapshot, fine-tune from the champion, evaluate, gate, register."""
    from fineloop.jobs import store as jobs
    from fineloop.jobs.service import start_training
    from fineloop.jobs.worker import worker_name

    overrides = parse_sets(sets or [])
    os.environ.setdefault("TQDM_DISABLE", "1")  # one progress bar: ours
    settings = load_settings(config)
    with opened_store(config) as store:
        if not wait:
            queued = start_training(store, project, overrides, nproc=nproc, launcher=launcher)
            console.print(f"queued job {queued.id}; a running `fineloop serve` will train it")
            return
        job = start_training(
            store, project, overrides, claimed_by=worker_name(), nproc=nproc, launcher=launcher
        )
        console.print(f"job {job.id}: training project [bold]{project}[/bold]")
        run_here(store, settings, job)
        with store.read() as session:
            done = jobs.job_public(session, jobs.get_job(session, job.id))
    report(done)
    if done["state"] != jobs.SUCCEEDED:
        raise typer.Exit(1)


def run_here(store: Store, settings: Settings, job: Job) -> None:
    """Run a job this process claimed, with a progress bar, beating like a worker so that
    running workers never take it for lost; Ctrl-C or SIGTERM end it as cancelled."""
    from fineloop.jobs.heartbeat import Heartbeat
    from fineloop.jobs.runner import execute
    from fineloop.jobs.sink import StoreSink, Tee
    from fineloop.jobs.worker import worker_name

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        sink = Tee(StoreSink(store, job.id), ProgressBar(progress))
        beating = Heartbeat(store, settings, worker_name(), recover=False)
        beating.hold(job.id, job.attempts)
        with _signals_end_the_job(), beating:
            execute(store, settings, job.id, sink)


def report(job: dict[str, Any]) -> None:
    """The outcome: state, the metrics of base, champion and candidate (a refit, when it
    is what was registered), the gate decision, and the refit's."""
    if job["state"] != "succeeded":
        why = job["error"] or job["message"]
        err_console.print(f"[red]job {job['id']} {job['state']}:[/red] {why}", highlight=False)
        return
    result = job["result"]
    metrics = result["metrics"]
    table = Table(
        "metric",
        f"base ({metrics['base_version']})",
        f"champion ({metrics['champion_version']})",
        f"candidate ({result['version']})",
        title=f"{metrics['split']} split, {metrics['examples']} queries",
    )
    for name in metrics["candidate"]:
        row = [metrics[role].get(name) for role in ("base", "champion", "candidate")]
        marker = " *" if name == metrics["primary"] else ""
        table.add_row(name + marker, *(f"{v:.4f}" if v is not None else "-" for v in row))
    console.print(table)
    gate = result["gate"]
    verdict = "[green]passed[/green]" if gate["passed"] else "[yellow]not passed[/yellow]"
    console.print(f"gate {verdict}: {gate['reason']}", highlight=False)
    if gate.get("note"):
        console.print(gate["note"], highlight=False)
    if refit := result.get("refit"):  # the project refits: what was registered, and why
        console.print(f"refit: {refit.get('reason')}", highlight=False)
    console.print(
        f"job {job['id']} succeeded: {job['message']} (champion: {result['champion']})",
        highlight=False,
    )
