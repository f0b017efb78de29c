"""Intent matching alone, in this process: the builtin bot's per-message cost."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from benchmarks.workloads import QUESTIONS
from chatlens.inference.intents import IntentMatcher
from chatlens.inference.knowledge_base import default_knowledge_base_path, load_knowledge_base

EVAL_SET = Path(__file__).resolve().parents[1] / "tests" / "data" / "intents_eval.yaml"


def bench_matching(*, max_seconds: float = 3.0, passes: int = 50) -> dict[str, float]:
    matcher = IntentMatcher(load_knowledge_base(default_knowledge_base_path()))
    texts = list(QUESTIONS)
    if EVAL_SET.exists():
        texts += [case["text"] for case in yaml.safe_load(EVAL_SET.read_text())]
    timings: list[int] = []
    deadline = time.perf_counter() + max_seconds
    for _ in range(passes):
        for text in texts:
            started = time.perf_counter_ns()
            matcher.match(text)
            timings.append(time.perf_counter_ns() - started)
        if time.perf_counter() > deadline:
            break
    timings.sort()
    total_s = sum(timings) / 1e9
    return {
        "calls": len(timings),
        "calls_per_s": round(len(timings) / total_s),
        "p50_us": round(timings[len(timings) // 2] / 1000, 1),
        "p99_us": round(timings[int(len(timings) * 0.99)] / 1000, 1),
    }
