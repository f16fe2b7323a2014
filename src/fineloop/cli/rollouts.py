"""`fineloop rollout show|set|end|evaluate PROJECT`: split traffic between versions."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from fineloop.cli.common import ConfigOption, console, err_console, opened_store
from fineloop.errors import field_path
from fineloop.rollouts import policy as rollout_policy
from fineloop.rollouts.public import rollout_public
from fineloop.rollouts.spec import RolloutPolicy, RolloutSpec
from fineloop.rollouts.store import active_rollout, end_rollout, policy_of, put_rollout
from fineloop.store.projects import get_project

app = typer.Typer(
    help="A/B rollouts: split traffic between versions, scored on feedback.",
    no_args_is_help=True,
)
USER = "user"
Project = Annotated[str, typer.Argument(help="Project name.")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why; kept in the history.")]


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print(found: dict[str, Any]) -> None:
    if found["id"] is None:
        console.print(f"project {found['project']!r} has had no rollout")
        return
    state = "active" if found["active"] else f"ended {found['ended_at'][:19]}"
    console.print(f"rollout {found['id']} ({state}), policy: {found['policy']}")
    table = Table("variant", "target", "version", "weight", "served", "judged", "accept", "reward")
    metrics = {m["variant"]: m for m in found["metrics"]}
    for variant in found["variants"]:
        m = metrics[variant["name"]]
        table.add_row(
            variant["name"],
            variant["target"],
            variant["version"] or "?",
            f"{variant['weight']:.3f}",
            str(m["interactions"]),
            str(m["judged"]),
            _num(m["acceptance_rate"]),
            _num(m["mean_reward"]),
        )
    console.print(table)
    for c in found["comparisons"]:
        verdict = f"significant, {c['better']} better" if c["significant"] else "not significant"
        kind = " sequential" if c.get("sequential") else ""
        console.print(
            f"{c['challenger']} - {c['control']} on {c['metric']}: {_num(c['difference'])} "
            f"[{_num(c['ci_low'])}, {_num(c['ci_high'])}],{kind} p = {_num(c['p_value'])} "
            f"({verdict})"
        )
    for change in found["history"]:
        console.print(
            f"{change['at'][:19]}  {change['action']:<8} by {change['actor']}: {change['reason']}"
        )


@app.command("show")
def show(project: Project, config: ConfigOption = None) -> None:
    """Variants, per-variant metrics, the significance test and the history."""
    with opened_store(config) as store, store.read() as session:
        found = rollout_public(session, get_project(session, project))
    _print(found)


@app.command("set")
def set_rollout(
    project: Project,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="NAME=TARGET:WEIGHT, repeated; the first is the control (target champion).",
        ),
    ] = None,
    challenger: Annotated[
        str | None, typer.Option(help="Shorthand: this version against the champion.")
    ] = None,
    share: Annotated[float, typer.Option(help="The challenger's share with --challenger.")] = 0.1,
    min_samples: Annotated[int | None, typer.Option(help="Policy: judged per variant.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Policy: significance level.")] = None,
    metric: Annotated[
        str | None, typer.Option(help="Policy: acceptance_rate or mean_reward.")
    ] = None,
    auto_rollback: Annotated[bool | None, typer.Option(help="Policy: roll back if worse.")] = None,
    auto_promote: Annotated[bool | None, typer.Option(help="Policy: promote if better.")] = None,
    reason: ReasonOption = None,
    config: ConfigOption = None,
) -> None:
    """Start a rollout or change its weights/policy, e.g.
    `fineloop rollout set shop --challenger v2 --share 0.1`."""
    variants = _variants(variant or [], challenger, share)
    changes = {
        k: v
        for k, v in {
            "min_samples": min_samples,
            "alpha": alpha,
            "metric": metric,
            "auto_rollback": auto_rollback,
            "auto_promote": auto_promote,
        }.items()
        if v is not None
    }
    with opened_store(config) as store:
        with store.write() as session:
            found = get_project(session, project)
            current = active_rollout(session, found.id)
            base = policy_of(current) if current is not None else RolloutPolicy()
            spec = _spec(variants, base.model_dump() | changes if changes else None, reason)
            put_rollout(session, found, spec, actor=USER)
        with store.read() as session:
            _print(rollout_public(session, get_project(session, project)))


@app.command("end")
def end(project: Project, reason: ReasonOption = None, config: ConfigOption = None) -> None:
    """End the active rollout: every request goes to the champion again."""
    with opened_store(config) as store, store.write() as session:
        found = get_project(session, project)
        rollout = active_rollout(session, found.id, lock=True)
        if rollout is None:
            err_console.print(f"[red]error:[/red] project {project!r} has no active rollout")
            raise typer.Exit(1)
        end_rollout(session, rollout, reason=reason or "ended by hand", actor=USER)
    console.print(f"rollout {rollout.id} ended: all traffic to the champion")


@app.command("evaluate")
def evaluate(project: Project, config: ConfigOption = None) -> None:
    """Run the policy now (a server also runs it after feedback, debounced)."""
    with opened_store(config) as store:
        taken = rollout_policy.evaluate(store, project)
    if not taken:
        console.print("no action: nothing significant yet, or no active rollout")
    for action in taken:
        console.print(f"{action['action']}: {action['reason']}")


def _variants(given: list[str], challenger: str | None, share: float) -> list[dict[str, Any]]:
    if challenger is not None:
        if given:
            raise _usage("give either --variant (repeated) or --challenger, not both")
        return [
            {"name": "champion", "target": "champion", "weight": 1 - share},
            {"name": "challenger", "target": challenger, "weight": share},
        ]
    variants = []
    for text in given:
        name, _, rest = text.partition("=")
        target, _, weight = rest.rpartition(":")
        try:
            variants.append({"name": name, "target": target, "weight": float(weight)})
        except ValueError:
            raise _usage(f"--variant {text!r}: write NAME=TARGET:WEIGHT") from None
    if not variants:
        raise _usage("give the variants: --challenger v2 [--share 0.1], or --variant (repeated)")
    return variants


def _spec(variants: list[dict[str, Any]], policy: Any, reason: str | None) -> RolloutSpec:
    try:
        return RolloutSpec.model_validate(
            {"variants": variants, "policy": policy, "reason": reason}
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise _usage(f"{field_path(list(first['loc']))}: {first['msg']}") from None


def _usage(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)
