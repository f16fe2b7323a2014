"""The dashboard for generation projects: interactions with their feedback, the methods a
training run chose, its live curves, and base / champion / candidate replies side by side."""

from __future__ import annotations

from fineloop.jobs.training_steps import SAMPLES, Comparison
from fineloop.registry.gate import GateDecision
from fineloop.tasks.base import Evaluation


def sampled(outputs: list[str], prompts: list[str]) -> Evaluation:
    samples = [
        {"input": {"prompt": p}, "reference": f"ref {p}", "output": o}
        for p, o in zip(prompts, outputs, strict=True)
    ]
    return Evaluation({"score": 1.0}, "score", [1.0], samples=samples)


def test_a_version_records_samples_side_by_side_matched_by_input() -> None:
    prompts = [f"q{i}" for i in range(SAMPLES + 2)]
    base = sampled([f"base {p}" for p in prompts], prompts)
    champion = sampled(["other"] + [f"champ {p}" for p in prompts[1:]], ["elsewhere", *prompts[1:]])
    candidate = sampled([f"cand {p}" for p in prompts], prompts)
    comparison = Comparison("score", base, champion, candidate, "v0", "v1")
    metrics = comparison.as_metrics(GateDecision(False, "no", "score", 0.0, None))
    rows = metrics["samples"]
    assert len(rows) == SAMPLES
    assert rows[0] == {
        "input": {"prompt": "q0"},
        "reference": "ref q0",
        "outputs": {"candidate": "cand q0", "base": "base q0", "champion": None},
    }
    assert rows[1]["outputs"]["champion"] == "champ q1"
    bare = [Evaluation({"score": 1.0}, "score") for _ in range(3)]
    plain = Comparison("score", *bare, "v0", "v0")
    assert "samples" not in plain.as_metrics(GateDecision(False, "no", "score", 0.0, None))
