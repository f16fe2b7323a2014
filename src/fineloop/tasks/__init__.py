"""Task families, found through the `fineloop.tasks` entry point group (built-ins too)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from fineloop.errors import Invalid

if TYPE_CHECKING:
    from fineloop.tasks.base import Task

GROUP = "fineloop.tasks"


@cache
def available() -> dict[str, str]:
    """Task name -> 'module:attribute', without importing any task (they pull in torch)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def get_task(name: str) -> Task:
    """The installed task family `name` (one instance per process: tasks hold no state)."""
    target = available().get(name)
    if target is None:
        known = ", ".join(sorted(available())) or "none"
        raise Invalid(f"no task {name!r} is installed (available: {known})", field="task")
    return _load(name, target)


@cache
def _load(name: str, target: str) -> Task:
    found = [ep for ep in entry_points(group=GROUP, name=name) if ep.value == target]
    task: Task = found[0].load()()
    return task
