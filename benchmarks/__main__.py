"""`make bench`: every benchmark, with figures printed for benchmarks/README.md."""

from __future__ import annotations

import argparse
import json
import os
import platform

from benchmarks.chat import bench_chat
from benchmarks.matching import bench_matching
from benchmarks.observability import bench_observability


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=3, help="on/off pairs (observability)")
    parser.add_argument("--only", choices=["matching", "chat", "observability"])
    args = parser.parse_args()
    print(f"# machine: {os.cpu_count()} cores, Python {platform.python_version()}")

    if args.only in (None, "matching"):
        result = bench_matching()
        verdict = "PASS" if result["p50_us"] < 1000 else "FAIL"
        print("matching", json.dumps(result), f"median under 1 ms: {verdict}")
    if args.only in (None, "chat"):
        chat = bench_chat(duration_s=args.duration, concurrency=args.concurrency)
        print("chat", json.dumps(chat.summary()))
    if args.only in (None, "observability"):
        obs = bench_observability(
            duration_s=args.duration, concurrency=args.concurrency, pairs=args.pairs
        )
        kept = obs["throughput_kept"]
        verdict = "PASS" if isinstance(kept, float) and kept >= 0.9 else "FAIL"
        print("observability", json.dumps(obs), f"on keeps >= 90 % of off: {verdict}")


if __name__ == "__main__":
    main()
