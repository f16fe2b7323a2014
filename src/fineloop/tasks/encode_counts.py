"""How many texts a step of a job ran through a model, and how many it found already done.

A training job's phases each need a model's vectors of the same corpus (mining with the
champion, validation scoring, evaluating base, champion and candidate); a cache lets all
but the first reuse them. Whoever encodes `record`s what it did under a phase name; the
job step that ran it collects the records with `counting()` and `report`s them as metrics
(`encoded/<phase>`, `reused/<phase>`, `encode_seconds/<phase>`) and one log line per
phase, which the dashboard and `fineloop jobs watch` show. Records made outside
`counting()` go nowhere. Light: no torch, no numpy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from fineloop.tasks.base import ProgressSink


@dataclass
class PhaseCount:
    """Texts encoded and reused in one phase, over every model it encoded with."""

    encoded: int = 0
    reused: int = 0
    seconds: float = 0.0
    models: int = 0


Counts = dict[str, PhaseCount]

_active: ContextVar[Counts | None] = ContextVar("fineloop_encode_counts", default=None)


@contextmanager
def counting() -> Iterator[Counts]:
    """Collect the records made in this context (phase name -> counts)."""
    counts: Counts = {}
    token = _active.set(counts)
    try:
        yield counts
    finally:
        _active.reset(token)


def record(phase: str, *, encoded: int, reused: int, seconds: float) -> None:
    counts = _active.get()
    if counts is None:
        return
    found = counts.setdefault(phase, PhaseCount())
    found.encoded += encoded
    found.reused += reused
    found.seconds += seconds
    found.models += 1


def report(sink: ProgressSink, counts: Counts, step: int = 0) -> None:
    for phase, count in counts.items():
        sink.metric(f"encoded/{phase}", step, count.encoded)
        sink.metric(f"reused/{phase}", step, count.reused)
        sink.metric(f"encode_seconds/{phase}", step, round(count.seconds, 3))
        sink.log(
            f"{phase}: encoded {count.encoded:,} corpus texts, reused {count.reused:,} "
            f"({count.models} model pass{'es' if count.models != 1 else ''}, "
            f"{count.seconds:.1f} s)"
        )
