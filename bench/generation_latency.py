"""Generation latency: `/v1/chat/completions` over HTTP against `GenerationPredictor` in
process, on the same model and settings; then two LoRA adapters alternating per request.

1. Streaming. fineloop: `fineloop serve` in a child process, the official `openai` client
   streaming a chat completion (greedy, `max_tokens`); plain: `GenerationPredictor.stream`
   in this process, same messages and settings. Time to first token (first non-empty text
   chunk) and tokens/s (completion tokens / the whole request's time); the two sides
   alternate in blocks, medians reported. Non-streaming `generate` is measured the same way.
2. Adapters. Two small LoRA adapters (r=8, random non-zero init so they change the replies)
   are registered as versions v1 and v2 of the project. In process: two predictors share one
   base; requests alternate v1, v2, v1, ... and `base_loads` (how often the base was loaded
   in this process) must stay 1; their latency is compared with the same requests all on v1.
   Over HTTP: `model="bench:v1"` / `"bench:v2"` alternating against all on v1.

    .venv/bin/python bench/generation_latency.py --model PATH     # ~9 min on 2 shared cores
    .venv/bin/python bench/generation_latency.py --model PATH --quick
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _child import set_threads
from _generation_common import (
    DEFAULT_MODEL,
    PROJECT,
    add_threads_option,
    seed_tasks,
    use_model,
)
from common import machine_facts, median, print_table, ratio, running_server, write_results

GOAL_RATIO = 0.9


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="Prepared SmolLM2 folder.")
    parser.add_argument("--prompts", type=int, default=8, help="Distinct prompts per block.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating blocks per side.")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--quick", action="store_true", help="4 prompts, 1 round.")
    add_threads_option(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.prompts, args.rounds = 4, 1
    return args


def questions(count: int) -> list[list[dict[str, str]]]:
    """Chat prompts: Self-Instruct seed instructions (every fifth task)."""
    tasks = seed_tasks()[::5][:count]
    return [[{"role": "user", "content": t.question}] for t in tasks]


def make_adapters(base: str, folder: Path) -> list[Path]:
    """Two LoRA adapters on `base`, saved as fineloop adapter folders."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from fineloop.tasks.generation.models import write_adapter_base

    made = []
    for index in (1, 2):
        torch.manual_seed(index)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(
            r=8,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,  # random B: the adapter changes the replies
            task_type="CAUSAL_LM",
        )
        peft = get_peft_model(model, config)
        out = folder / f"adapter{index}"
        peft.save_pretrained(str(out))
        write_adapter_base(out, base)
        made.append(out)
    return made


def setup_store(settings: Any, base: str) -> list[Path]:
    """The project (base = `base`) with versions v1 and v2, adapters in the artifact root."""
    from fineloop import artifacts
    from fineloop.registry.versions import register_version
    from fineloop.schemas import ProjectCreate
    from fineloop.store import Store
    from fineloop.store.projects import create_project

    folder = Path(artifacts.root(settings)) / PROJECT / "bench-adapters"
    adapters = make_adapters(base, folder)
    store = Store.open(settings)
    try:
        with store.write() as session:
            project = create_project(
                session, ProjectCreate(name=PROJECT, task="generation", base_model=base)
            )
            for number, adapter in enumerate(adapters, start=1):
                register_version(
                    session, project, artifact_uri=str(adapter), base_model=base, number=number
                )
    finally:
        store.close()
    return adapters


# --- one request, in process and over HTTP --------------------------------------------


def local_stream(predictor: Any, messages: Any, max_tokens: int) -> dict[str, float]:
    from fineloop.tasks.generation.predict_io import GenerationInput

    asked = GenerationInput(messages=messages, max_tokens=max_tokens)
    started = time.perf_counter()
    first = None
    stream = predictor.stream(asked)
    for chunk in stream:
        if chunk and first is None:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    tokens = stream.output.completion_tokens
    return timing(first, total, tokens)


def local_generate(predictor: Any, messages: Any, max_tokens: int) -> dict[str, float]:
    from fineloop.tasks.generation.predict_io import GenerationInput

    started = time.perf_counter()
    out = predictor.generate(GenerationInput(messages=messages, max_tokens=max_tokens))
    return timing(None, time.perf_counter() - started, out.completion_tokens)


def http_stream(client: Any, model: str, messages: Any, max_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    first = None
    tokens = 0
    chunks = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return timing(first, time.perf_counter() - started, tokens)


def http_generate(client: Any, model: str, messages: Any, max_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    done = client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0
    )
    tokens = done.usage.completion_tokens if done.usage else 0
    return timing(None, time.perf_counter() - started, tokens)


def timing(first: float | None, total: float, tokens: int) -> dict[str, float]:
    out = {"total_s": total, "tokens": float(tokens), "tokens_per_s": tokens / total}
    if first is not None:
        out["ttft_s"] = first
    return out


def warm(client: Any, model: str) -> None:
    """The first request loads the version in the background (503 meanwhile): wait."""
    import openai

    deadline = time.monotonic() + 300
    while True:
        try:
            http_generate(client, model, [{"role": "user", "content": "Hi"}], 2)
            return
        except openai.APIStatusError as error:
            if error.status_code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def summarize(results: list[dict[str, float]]) -> dict[str, float]:
    keys = results[0].keys()
    out = {f"median_{k}": median([r[k] for r in results]) for k in keys}
    out["requests"] = float(len(results))
    return out


# --- the benchmark ---------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    base = use_model(args.model)
    machine = machine_facts()
    asks = questions(args.prompts)
    data_dir = Path(tempfile.mkdtemp(prefix="gen-latency-"))
    from fineloop.config import get_settings
    from fineloop.tasks.generation.predict import GenerationPredictor

    settings = get_settings(data_dir=data_dir / "data")
    adapters = setup_store(settings, base)
    sides: dict[str, dict[str, list[dict[str, float]]]] = {
        "stream": {"fineloop": [], "plain": []},
        "generate": {"fineloop": [], "plain": []},
    }
    adapter_runs: dict[str, list[dict[str, float]]] = {
        "local_same": [],
        "local_alternating": [],
        "http_same": [],
        "http_alternating": [],
    }
    env = {
        "FINELOOP_DATA_DIR": str(settings.data_dir),
        "FINELOOP_MODELS_ROOT": str(Path(base).parent),
        "FINELOOP_SERVING_THREADS": str(args.threads),
    }
    try:
        with running_server(env=env, startup_s=120) as server:
            from openai import OpenAI

            client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
            for version in ("", ":v1", ":v2"):
                warm(client, PROJECT + version)
            plain = GenerationPredictor(base)
            one = [GenerationPredictor(str(adapters[0])), GenerationPredictor(str(adapters[1]))]
            loads_before = plain.base_loads
            local_generate(plain, asks[0], 2)  # warm-up
            for round_ in range(args.rounds):
                order = ("plain", "fineloop") if round_ % 2 == 0 else ("fineloop", "plain")
                for side in order:
                    for ask in asks:
                        if side == "plain":
                            sides["stream"]["plain"].append(
                                local_stream(plain, ask, args.max_tokens)
                            )
                            sides["generate"]["plain"].append(
                                local_generate(plain, ask, args.max_tokens)
                            )
                        else:
                            sides["stream"]["fineloop"].append(
                                http_stream(client, PROJECT, ask, args.max_tokens)
                            )
                            sides["generate"]["fineloop"].append(
                                http_generate(client, PROJECT, ask, args.max_tokens)
                            )
                print(f"round {round_} done", flush=True)
            for ask in asks:  # adapters: same version, then alternating, both sides
                adapter_runs["local_same"].append(local_generate(one[0], ask, args.max_tokens))
                adapter_runs["http_same"].append(
                    http_generate(client, f"{PROJECT}:v1", ask, args.max_tokens)
                )
            for index, ask in enumerate(asks * 2):
                which = index % 2
                adapter_runs["local_alternating"].append(
                    local_generate(one[which], ask, args.max_tokens)
                )
                adapter_runs["http_alternating"].append(
                    http_generate(client, f"{PROJECT}:v{which + 1}", ask, args.max_tokens)
                )
            loads_after = plain.base_loads
            differ = local_reply(one[0], asks[0], args.max_tokens) != local_reply(
                one[1], asks[0], args.max_tokens
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    report(args, machine, sides, adapter_runs, loads_before, loads_after, differ)


def local_reply(predictor: Any, messages: Any, max_tokens: int) -> str:
    from fineloop.tasks.generation.predict_io import GenerationInput

    return str(predictor.generate(GenerationInput(messages=messages, max_tokens=max_tokens)).text)


def adapter_row(
    label: str,
    adapters: dict[str, dict[str, float]],
    where: str,
    before: int | None,
    after: int | None,
) -> list[Any]:
    same = adapters[f"{where}_same"]["median_tokens_per_s"]
    alternating = adapters[f"{where}_alternating"]["median_tokens_per_s"]
    loads = "" if before is None else f"{before} -> {after}"
    verdict = (
        ""
        if before is None
        else ("[green]yes[/green]" if before == after == 1 else "[red]no[/red]")
    )
    return [label, same, alternating, ratio(alternating, same), loads, verdict]


def report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    sides: dict[str, dict[str, list[dict[str, float]]]],
    adapter_runs: dict[str, list[dict[str, float]]],
    loads_before: int,
    loads_after: int,
    adapters_differ: bool,
) -> None:
    stream = {side: summarize(sides["stream"][side]) for side in ("fineloop", "plain")}
    whole = {side: summarize(sides["generate"][side]) for side in ("fineloop", "plain")}
    adapters = {name: summarize(runs) for name, runs in adapter_runs.items()}
    stream_ratio = ratio(
        stream["fineloop"]["median_tokens_per_s"], stream["plain"]["median_tokens_per_s"]
    )
    whole_ratio = ratio(
        whole["fineloop"]["median_tokens_per_s"], whole["plain"]["median_tokens_per_s"]
    )
    ttft_ratio = ratio(stream["plain"]["median_ttft_s"], stream["fineloop"]["median_ttft_s"])
    met = {
        "stream_tokens_per_s_ratio_at_least_0.9": stream_ratio >= GOAL_RATIO,
        "generate_tokens_per_s_ratio_at_least_0.9": whole_ratio >= GOAL_RATIO,
        "no_base_reload_alternating_adapters": loads_after == loads_before == 1,
    }
    yes = {True: "[green]yes[/green]", False: "[red]no[/red]"}
    ms = 1000.0
    print_table(
        f"Generation latency, SmolLM2-135M-Instruct fp32, greedy, max_tokens {args.max_tokens}, "
        f"{args.prompts} Self-Instruct prompts x {args.rounds} alternating rounds (medians); "
        "fineloop = /v1/chat/completions over HTTP (openai client), plain = GenerationPredictor "
        "in process",
        ["metric", "fineloop", "plain", "fineloop/plain", "goal", "met"],
        [
            [
                "stream: time to first token ms",
                stream["fineloop"]["median_ttft_s"] * ms,
                stream["plain"]["median_ttft_s"] * ms,
                1 / ttft_ratio,
                "",
                "",
            ],
            [
                "stream: tokens/s",
                stream["fineloop"]["median_tokens_per_s"],
                stream["plain"]["median_tokens_per_s"],
                stream_ratio,
                ">= 0.9",
                yes[met["stream_tokens_per_s_ratio_at_least_0.9"]],
            ],
            [
                "generate: request ms",
                whole["fineloop"]["median_total_s"] * ms,
                whole["plain"]["median_total_s"] * ms,
                ratio(whole["fineloop"]["median_total_s"], whole["plain"]["median_total_s"]),
                "",
                "",
            ],
            [
                "generate: tokens/s",
                whole["fineloop"]["median_tokens_per_s"],
                whole["plain"]["median_tokens_per_s"],
                whole_ratio,
                ">= 0.9",
                yes[met["generate_tokens_per_s_ratio_at_least_0.9"]],
            ],
        ],
    )
    print_table(
        "Two LoRA adapters on one base: tokens/s (median per request), all on v1 vs v1/v2 "
        "alternating per request",
        ["where", "all v1", "v1/v2 alternating", "alternating/same", "base loads", "no reload"],
        [
            adapter_row("in process (2 predictors)", adapters, "local", loads_before, loads_after),
            adapter_row("HTTP (model bench:v1 / bench:v2)", adapters, "http", None, None),
        ],
    )
    for goal, ok in met.items():
        print(f"goal {goal}: {'met' if ok else 'MISSED'}")
    print(f"the two adapters give different replies: {adapters_differ}")
    path = write_results(
        "generation_latency",
        {
            "benchmark": "generation_latency",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine | {"load_average_at_end": machine_facts()["load_average"]},
            "config": vars(args)
            | {
                "prompts_from": "self-instruct seed_tasks.jsonl, every fifth task",
                "tokens_per_s": "completion tokens / the whole request's wall time",
                "server": "fineloop serve (child process, SQLite, default settings), "
                "openai client over loopback HTTP",
            },
            "cases": [
                {
                    "case": "stream",
                    "fineloop": stream["fineloop"],
                    "base": {},
                    "plain": stream["plain"],
                    "ratio_tokens_per_s": stream_ratio,
                    "ratio_ttft_plain_over_fineloop": ttft_ratio,
                    "runs": sides["stream"],
                },
                {
                    "case": "generate",
                    "fineloop": whole["fineloop"],
                    "base": {},
                    "plain": whole["plain"],
                    "ratio_tokens_per_s": whole_ratio,
                    "runs": sides["generate"],
                },
                {
                    "case": "adapters",
                    "fineloop": {
                        "http_same": adapters["http_same"],
                        "http_alternating": adapters["http_alternating"],
                    },
                    "base": {},
                    "plain": {
                        "local_same": adapters["local_same"],
                        "local_alternating": adapters["local_alternating"],
                    },
                    "base_loads_before": loads_before,
                    "base_loads_after": loads_after,
                    "adapters_give_different_replies": adapters_differ,
                },
            ],
            "met": met,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
