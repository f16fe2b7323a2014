"""Online adaptation for generation: is a correction reused for near-identical prompts,
and are other prompts left alone? Measured on SmolLM2-135M-Instruct through a real server.

Data: 20 Self-Instruct seed tasks (instructions without input) are corrected once each: the
correction is the task's reference output, sent as a `correction` for the instruction.
Held out, never corrected, per corrected task:
- surface: the instruction lowercased, without its final punctuation, with extra spaces;
- paraphrase: a hand-written rewording ("Invent a new ice cream flavor." for "Make up a
  new flavor of ice cream.");
and as the harm check:
- unrelated: 20 other seed tasks, no near neighbour among the corrected ones;
- near_but_different: 10 hand-written prompts close in words to a corrected one but asking
  something else ("... sorts a list from small to large." against "... large to small."):
  reusing the correction there gives a wrong answer.

Each mode answers every prompt greedily (max_tokens 64) in the same project, switched by
`PATCH serving_policy`: off, exact, direct (`reuse_min_similarity`, default 0.95), few_shot
(exact hits returned, else `reuse_shots` 2 neighbours at cosine >=
`adaptation_min_similarity` 0.75 shown as earlier turns). Per group: ROUGE-L
F1 and edit ratio of the answer to the correction, how often the mode adapted, how often
the answer changed from `off` (harm on unrelated and near-but-different prompts). The
cosines the server compares (MiniLM, last user turn) are also reported for every held-out
prompt, and the direct thresholds 0.80-0.97 are evaluated on them (hit rate on variants,
false hits on near-but-different prompts) without rerunning the model.

Sides in the result file: `base` = off (the model alone), `fineloop` = the default mode,
`plain` = few_shot: what an application does by itself with retrieval (examples into the
prompt, the model still answers), the natural bare alternative to returning a stored
answer.

    FINELOOP_MODELS_ROOT=/path/with/prepared/model .venv/bin/python bench/generation_adaptation.py
    .venv/bin/python bench/generation_adaptation.py --quick      # 6 corrected tasks
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from common import machine_facts, print_table, running_server, write_results
from shared_data import DATASETS

PROJECT = "adapt"
MAX_TOKENS = 64
MODES = ("off", "exact", "direct", "few_shot")
RETURNING = ("exact", "direct")
COPY_TOLERANCE = 0.05
THRESHOLDS = (0.8, 0.85, 0.9, 0.925, 0.95, 0.97)
CORRECTED = {  # seed task id -> hand-written paraphrase of its instruction
    "seed_task_0": "What could I eat for breakfast with no eggs but plenty of protein, "
    "around 700 to 1000 calories?",
    "seed_task_9": "Suggest a film I could watch this weekend and tell me why.",
    "seed_task_10": "What games can a group of people play together?",
    "seed_task_11": "Write a shopping list for a healthy dinner.",
    "seed_task_17": "Make a checklist for planning a birthday party.",
    "seed_task_21": "Come up with an entertaining math problem for kids.",
    "seed_task_30": "List some soft salty snacks.",
    "seed_task_33": "Write a questionnaire about people's cooking and eating habits.",
    "seed_task_34": "My girlfriend and I just split up and I feel really sad. Any advice?",
    "seed_task_63": "Tell me a knock-knock joke about a banana.",
    "seed_task_72": "Write a Python function to sort a list in descending order.",
    "seed_task_76": "Invent a new ice cream flavor.",
    "seed_task_80": "Give me some questions I can use to start a conversation.",
    "seed_task_88": "What year did Yao Ming retire?",
    "seed_task_90": "What is a phrase I could say to show that I'm very happy?",
    "seed_task_110": "Convert 85 degrees Fahrenheit to Celsius.",
    "seed_task_127": "What can I do to relieve stress?",
    "seed_task_131": "What are the best home exercises to lose belly fat?",
    "seed_task_139": "Write code that sums all the integers from k to n.",
    "seed_task_140": "Write JavaScript code that prints the current date and time.",
}
UNRELATED = (
    "seed_task_6 seed_task_20 seed_task_25 seed_task_27 seed_task_40 seed_task_55 "
    "seed_task_56 seed_task_57 seed_task_70 seed_task_73 seed_task_84 seed_task_93 "
    "seed_task_102 seed_task_105 seed_task_106 seed_task_112 seed_task_118 seed_task_124 "
    "seed_task_133 seed_task_138"
).split()
NEAR_BUT_DIFFERENT = (
    "Recommend a book for me to read during the weekend and explain the reason.",
    "Make a grocery list for a birthday party.",
    "Create a fun science question for children.",
    "Write a knock knock joke about apples.",
    "Write a python function that sorts a list from small to large.",
    "Converting 85 C to Fahrenheit.",
    "Write a script in Python for printing the current date and time.",
    "Give me a phrase that I can use to express I am very sad.",
    "Question: in which year did Michael Jordan retire?\nAnswer:",
    "Make up a new flavor of potato chips.",
)


def seed_tasks() -> dict[str, dict[str, Any]]:
    path = DATASETS / "self-instruct" / "seed_tasks.jsonl"
    return {task["id"]: task for task in map(json.loads, path.read_text().splitlines())}


def surface(text: str) -> str:
    return "  " + " ".join(text.lower().rstrip("?.!:").split()).replace(" ", "  ", 1) + " "


def ask(http: httpx.Client, prompt: str) -> tuple[dict[str, Any], float]:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS}
    for _attempt in range(60):  # 503 while the model loads: retry after what it says
        started = time.perf_counter()
        answer = http.post(f"/v1/projects/{PROJECT}/generate", json=body, timeout=600)
        if answer.status_code != 503:
            break
        time.sleep(float(answer.headers.get("retry-after", "2")))
    answer.raise_for_status()
    return answer.json(), time.perf_counter() - started


def set_mode(http: httpx.Client, mode: str) -> None:
    policy = {"reuse_corrections": mode}
    http.patch(f"/v1/projects/{PROJECT}", json={"serving_policy": policy}).raise_for_status()


def cosines(prompts: list[str], references: list[str]) -> np.ndarray:
    """Each prompt's cosine to each reference, as the server computes it."""
    from fineloop.tasks.generation.serving import shared_minilm

    model = shared_minilm().model
    left = model.encode(prompts, normalize_embeddings=True)
    right = model.encode(references, normalize_embeddings=True)
    return np.asarray(left @ right.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 corrected tasks, 6 unrelated")
    args = parser.parse_args()
    from fineloop.tasks.generation.metrics import edit_ratio, rouge_l

    tasks = seed_tasks()
    corrected = list(CORRECTED.items())[: 6 if args.quick else None]
    unrelated = UNRELATED[: 6 if args.quick else None]
    near = NEAR_BUT_DIFFERENT[: 4 if args.quick else None]
    instructions = [tasks[t]["instruction"] for t, _ in corrected]
    corrections = [tasks[t]["instances"][0]["output"] for t, _ in corrected]
    groups: dict[str, list[tuple[str, str | None]]] = {  # (prompt, the correction it should get)
        "surface": [(surface(q), c) for q, c in zip(instructions, corrections, strict=True)],
        "paraphrase": [(p, c) for (_, p), c in zip(corrected, corrections, strict=True)],
        "unrelated": [(tasks[t]["instruction"], None) for t in unrelated],
        "near_but_different": [(p, None) for p in near],
    }
    matrices = {name: cosines([p for p, _ in rows], instructions) for name, rows in groups.items()}
    sims = {name: m.max(axis=1).round(4).tolist() for name, m in matrices.items()}
    # the wrong answer a near-but-different prompt could copy: its nearest correction
    wrong = [corrections[int(i)] for i in matrices["near_but_different"].argmax(axis=1)]
    models_root = os.environ.get("FINELOOP_MODELS_ROOT")
    env = {"FINELOOP_MODELS_ROOT": models_root} if models_root else {}
    answers: dict[str, dict[str, list[dict[str, Any]]]] = {}
    seconds: dict[str, list[float]] = {}
    began = time.perf_counter()
    with (
        running_server(env=env, startup_s=120) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        created = http.post("/v1/projects", json={"name": PROJECT, "task": "generation"})
        created.raise_for_status()
        set_mode(http, "exact")
        ask(http, "Hello")  # loads the model; the project's memory exists from here on
        for instruction, correction in zip(instructions, corrections, strict=True):
            event = {
                "kind": "correction",
                "input": {"messages": [{"role": "user", "content": instruction}]},
                "output": correction,
            }
            http.post(f"/v1/projects/{PROJECT}/feedback", json=event).raise_for_status()
        time.sleep(3.0)  # the hook's refresh embeds the corrections in the background
        for mode in MODES:
            set_mode(http, mode)
            answers[mode], seconds[mode] = {}, []
            for name, rows in groups.items():
                answers[mode][name] = []
                for prompt, _ in rows:
                    result, took = ask(http, prompt)
                    answers[mode][name].append(result)
                    seconds[mode].append(took)
            print(f"{mode}: {time.perf_counter() - began:.0f} s")
    results = summarize(groups, answers, seconds, edit_ratio, rouge_l)
    for mode in MODES:  # how much a near-but-different answer looks like the wrong one
        texts = [a["text"] for a in answers[mode]["near_but_different"]]
        copied = statistics.mean(rouge_l(texts, wrong))
        results[mode]["near_but_different"]["rouge_l_to_nearest_correction"] = round(copied, 4)
    sweep = threshold_sweep(sims)
    default = choose(results)
    cases = [
        {
            "case": name,
            "base": results["off"][name],
            "fineloop": results[default][name],
            "plain": results["few_shot"][name],
            **{mode: results[mode][name] for mode in MODES},
        }
        for name in groups
    ]
    payload = {
        "benchmark": "generation_adaptation",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "config": {
            "model": "SmolLM2-135M-Instruct (prepared from the packaged GGUF)",
            "quick": args.quick,
            "max_tokens": MAX_TOKENS,
            "corrected": len(corrected),
            "groups": {name: [p for p, _ in rows] for name, rows in groups.items()},
            "sides": {"base": "off", "fineloop": default, "plain": "few_shot"},
            "policy": {"reuse_min_similarity": 0.95, "reuse_shots": 2, "few_shot_min": 0.75},
        },
        "cosine_to_nearest_correction": sims,
        "direct_threshold_sweep": sweep,
        "median_seconds_per_request": {
            m: round(statistics.median(s), 3) for m, s in seconds.items()
        },
        "cases": cases,
        "answers": {
            mode: {name: [a["text"] for a in rows] for name, rows in by_group.items()}
            for mode, by_group in answers.items()
        },
    }
    path = write_results("generation_adaptation", payload)
    show(results, sweep)
    print(f"default mode from the numbers: {default}; wrote {path}")


def summarize(
    groups: dict[str, list[tuple[str, str | None]]],
    answers: dict[str, dict[str, list[dict[str, Any]]]],
    seconds: dict[str, list[float]],
    edit_ratio: Any,
    rouge_l: Any,
) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mode, by_group in answers.items():
        out[mode] = {}
        for name, rows in groups.items():
            texts = [a["text"] for a in by_group[name]]
            base = [a["text"] for a in answers["off"][name]]
            adapted = [a.get("adapted") is not None for a in by_group[name]]
            returned = [(a.get("adapted") or {}).get("mode") in RETURNING for a in by_group[name]]
            numbers: dict[str, float] = {
                "adapted": round(sum(adapted) / len(adapted), 4),
                "returned_a_correction": round(sum(returned) / len(returned), 4),
                "changed_from_off": round(
                    sum(t != b for t, b in zip(texts, base, strict=True)) / len(texts), 4
                ),
            }
            wanted = [c for _, c in rows]
            if all(c is not None for c in wanted):
                refs = [str(c) for c in wanted]
                numbers["rouge_l"] = round(statistics.mean(rouge_l(texts, refs)), 4)
                numbers["edit_ratio"] = round(statistics.mean(edit_ratio(texts, refs)), 4)
                numbers["equals_correction"] = round(
                    sum(t == r for t, r in zip(texts, refs, strict=True)) / len(texts), 4
                )
            out[mode][name] = numbers
    return out


def threshold_sweep(sims: dict[str, list[float]]) -> list[dict[str, float]]:
    """What `direct` would do at each threshold, from the cosines alone."""
    rows = []
    for threshold in THRESHOLDS:
        row: dict[str, float] = {"threshold": threshold}
        for name, values in sims.items():
            row[name] = round(sum(v >= threshold for v in values) / len(values), 4)
        rows.append(row)
    return rows


def choose(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """The mode with the best mean ROUGE-L over the held-out variants (surface and
    paraphrase) among the harmless ones: no answer to an unrelated prompt changed, no
    near-but-different prompt got a correction returned as its answer, and their answers
    look no more like that wrong correction than off's do (ROUGE-L up by at most
    `COPY_TOLERANCE`). Off if none helps."""

    def score(mode: str) -> float:
        return (results[mode]["surface"]["rouge_l"] + results[mode]["paraphrase"]["rouge_l"]) / 2

    best = "off"
    off_copied = results["off"]["near_but_different"]["rouge_l_to_nearest_correction"]
    for mode in MODES[1:]:
        near = results[mode]["near_but_different"]
        copied = near["rouge_l_to_nearest_correction"] - off_copied
        harmless = (
            results[mode]["unrelated"]["changed_from_off"] == 0
            and near["returned_a_correction"] == 0
            and copied <= COPY_TOLERANCE
        )
        if harmless and score(mode) > score(best):
            best = mode
    return best


def show(results: dict[str, dict[str, dict[str, float]]], sweep: list[dict[str, float]]) -> None:
    columns = ["mode / group", "rouge_l", "edit_ratio", "= corr.", "adapted", "returned", "changed"]
    rows = []
    for mode, by_group in results.items():
        for name, n in by_group.items():
            rows.append(
                [
                    f"{mode} / {name}",
                    n.get("rouge_l"),
                    n.get("edit_ratio"),
                    n.get("equals_correction"),
                    n["adapted"],
                    n["returned_a_correction"],
                    n["changed_from_off"],
                ]
            )
    print_table("answers vs the correction, per mode", columns, rows)
    names = [k for k in sweep[0] if k != "threshold"]
    print_table(
        "direct: share at cosine >= threshold",
        ["threshold", *names],
        [[str(r["threshold"]), *(r[k] for k in names)] for r in sweep],
    )


if __name__ == "__main__":
    main()
