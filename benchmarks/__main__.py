"""`make bench`: every benchmark in order, about 25 minutes on 2 cores (benchmarks/README.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

from benchmarks import analytics, instructions, instrumentations, relay
from benchmarks.chat import LoadRun, bench_chat
from benchmarks.matching import REQUIRED_MEDIAN_US, bench_matching
from benchmarks.observability import SAMPLER_LABELS, SAMPLERS, Side, bench_observability
from benchmarks.server import split_cpus
from benchmarks.wrk import wrk_executable

BENCHMARKS = (
    "matching",
    "chat",
    "observability",
    "relay",
    "analytics",
    "instructions",
    "instrumentations",
)
WARMUP_S = 1.0
CHOICES_HELP = """\
--only choices; without --only all seven run in this order, about 25 minutes on 2 cores:
  matching       IntentMatcher.match() alone, against its 1 ms median target   ~10 s
  chat           POST /chat against `chatlens serve`: requests/s, latency      ~30 s
  observability  POST /chat with observability on against off, interleaved,
                 at 10 % and at 100 % trace sampling                           ~5 min
  relay          /v1/chat/completions: upstream, bare relays, chatlens,
                 LiteLLM (needs wrk, benchmarks/.litellm)                      ~2 min
  analytics      1,000,000 metrics rows on PostgreSQL and SQLite: queries,
                 CSV and XLSX exports                                          ~9 min
  instructions   instructions per request under valgrind (POST /chat off, and
                 on at 10 % and 100 % sampling; a relayed turn); needs valgrind ~7 min
  instrumentations  an SDK span, and chatlens's spans against OpenTelemetry's
                 official instrumentations, µs per call in-process            ~1 min
"""
OBSERVABILITY_WARMUP_S = 2.0


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{commit}{' + uncommitted changes in src' if changed else ''}"


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _print_load(label: str, run: LoadRun) -> None:
    s = run.stats
    print(
        f"  {label}requests {s['requests']:,}  errors {s['errors']}  "
        f"rps {_fmt(s['rps'])}  p50 {_fmt(s['p50_ms'], 2)} ms  "
        f"p90 {_fmt(s['p90_ms'], 2)} ms  p99 {_fmt(s['p99_ms'], 2)} ms"
    )
    cpu = run.cpu
    server = "n/a" if cpu.server_pct is None else f"{cpu.server_pct:.0f} %"
    others = "n/a" if cpu.others_pct is None else f"{cpu.others_pct:.0f} %"
    print(
        f"  {' ' * len(label)}CPU over {cpu.wall_s:.1f} s, in % of one core: "
        f"client {cpu.client_pct:.0f} %, server {server}, other processes {others} "
        f"-> {cpu.verdict()}"
    )
    for sample in run.error_samples:
        print(f"  {' ' * len(label)}error: {sample}")


def run_matching() -> None:
    """Intent matching in this process."""
    result = bench_matching()
    verdict = "PASS" if result.passed else "FAIL"
    print(f"\n== matching: IntentMatcher.match() in-process, inputs: {result.inputs}")
    print(
        f"  matcher built in {result.build_ms:.0f} ms; {result.passes} passes, "
        f"{result.calls:,} timed calls"
    )
    print(
        f"  calls/s {result.calls_per_s:,.0f}  p50 {result.p50_us:.1f} µs  "
        f"p99 {result.p99_us:.1f} µs"
    )
    print(f"  requirement: median under {REQUIRED_MEDIAN_US / 1000:.0f} ms -> {verdict}")


def run_chat(args: argparse.Namespace) -> None:
    """POST /chat against `chatlens serve`."""
    print(
        f"\n== chat: POST /chat (non-streamed) against `chatlens serve` "
        f"(1 uvicorn worker, SQLite), {args.concurrency} clients, "
        f"{args.duration:g} s after {WARMUP_S:g} s warm-up"
    )
    run = bench_chat(
        duration_s=args.duration,
        concurrency=args.concurrency,
        max_requests=args.max_requests,
        pin_cpus=not args.no_pin,
    )
    print(f"  {'server pinned to one CPU, client to the other' if run.pinned else 'not pinned'}")
    _print_load("", run)


def _print_side(label: str, side: Side) -> None:
    print(
        f"    {label} requests {side.requests:,}  errors {side.errors}  "
        f"rps {_fmt(side.rps)}  p50 {_fmt(side.p(0.50), 2)} ms  "
        f"p99 {_fmt(side.p(0.99), 2)} ms  server CPU {_fmt(side.cpu_ms_per_request, 2)} ms/request"
    )
    for sample in side.error_samples:
        print(f"    {' ' * len(label)} error: {sample}")


def _describe_baseline(baseline: Path) -> str:
    """The baseline checkout and its commit."""
    done = subprocess.run(
        ["git", "-C", str(baseline), "log", "-1", "--format=%h %cs"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{baseline} at {done.stdout.strip() or 'an unknown commit'}"


def run_observability(args: argparse.Namespace) -> None:
    """Observability on against off, side by side, in alternating slices; once per sampler."""
    samplers = (
        ("always",) if args.control else SAMPLERS if args.sampler == "both" else (args.sampler,)
    )
    for sampler in samplers:
        _run_observability(args, sampler)


def _run_observability(args: argparse.Namespace, sampler: str) -> None:
    what = (
        "off against off (control)"
        if args.control
        else f"off against on ({SAMPLER_LABELS[sampler]})"
        if args.baseline is None
        else f"the baseline (off) against this build (on), both on ({SAMPLER_LABELS[sampler]}); "
        f"baseline: {_describe_baseline(args.baseline)}"
    )
    route = "/v1/chat/completions (relayed)" if args.relayed else "POST /chat"
    print(
        f"\n== observability: {route}, {what}; {args.rounds} rounds, each starting both "
        f"servers on one CPU and alternating {args.slice:g} s slices between them "
        f"({args.duration:g} s each side per round, after {OBSERVABILITY_WARMUP_S:g} s warm-up), "
        f"{args.concurrency} clients"
    )
    result = bench_observability(
        duration_s=args.duration,
        concurrency=args.concurrency,
        rounds=args.rounds,
        slice_s=args.slice,
        warmup_s=OBSERVABILITY_WARMUP_S,
        cpus=None if args.no_pin else split_cpus(),
        control=args.control,
        sampler=sampler,
        baseline=args.baseline,
        relayed=args.relayed,
    )
    for index, one in enumerate(result.rounds, start=1):
        print(
            f"  round {index} ({one.first} started first): "
            f"on keeps {_fmt(100 * one.throughput_kept)} %"
        )
        _print_side("off:", one.off)
        _print_side("on: ", one.on)
    print(
        f"  on keeps {_fmt(100 * result.throughput_kept)} % of off's requests/s "
        f"(median of {sum(len(one.pair_ratios) for one in result.rounds)} slice pairs: "
        f"{_fmt(100 * result.median_pair_ratio)} %; from server CPU per request: "
        f"{_fmt(100 * result.cpu_ratio)} %); p99 on/off {_fmt(result.p99_ratio, 2)}x"
    )


def run_analytics(args: argparse.Namespace) -> None:
    """summary, intents, timeseries and exports over --rows conversation_metrics rows."""
    print(
        f"\n== analytics: {args.rows:,} conversation_metrics rows over 30 days, on PostgreSQL "
        f"and SQLite; 30-day queries, then CSV and XLSX exports of every row"
    )
    for result in analytics.bench_analytics(args.rows):
        print(f"  {result.backend}: loaded in {result.load_s:.1f} s (bulk path)")
        for timing in result.queries:
            print(f"    {timing.name:<28} {timing.seconds * 1000:8.0f} ms")
        for run in result.exports:
            print(
                f"    export {run.fmt:<4} {run.bytes / 1e6:8.1f} MB in {run.seconds:6.1f} s, "
                f"RSS growth {run.rss_growth_mb:6.1f} MB"
            )


def run_relay(args: argparse.Namespace) -> None:
    """/v1/chat/completions: directly, through the bare relays, chatlens and LiteLLM."""
    engine = "wrk" if wrk_executable() is not None else "the Python load generator (no wrk)"
    print(
        f"\n== relay: /v1/chat/completions against a fake upstream (20 chunks, no delays); "
        f"non-streamed, {args.concurrency} clients, {args.duration:g} s, load from {engine}; "
        f"then time to first content byte, streamed, one client, 200 requests"
    )
    if relay.litellm_executable() is None:
        print(
            f"  LiteLLM not installed (python -m venv {relay.LITELLM_VENV.relative_to(Path.cwd())} "
            f"&& {relay.LITELLM_VENV.name}/bin/pip install 'litellm[proxy]'): not measured"
        )
    results = relay.bench_relay(
        duration_s=args.duration,
        concurrency=args.concurrency,
        cpus=None if args.no_pin else split_cpus(),
        baseline=args.baseline,
    )
    if args.baseline is not None:
        print(f"  {relay.BASELINE}: {_describe_baseline(args.baseline)}")
    for result in results:
        s = result.load
        cpu = "n/a" if result.cpu_pct is None else f"{result.cpu_pct:.0f} %"
        print(
            f"  {result.name:<20} rps {_fmt(s['rps'])}  errors {s['errors']}  "
            f"p50 {_fmt(s['p50_ms'], 2)} ms  p99 {_fmt(s['p99_ms'], 2)} ms  CPU {cpu}  "
            f"TTFB p50 {_fmt(result.ttfb_p50, 2)} ms  p90 {_fmt(result.ttfb_p90, 2)} ms"
        )
    for result in results[1:]:
        print(
            f"  {result.name}: adds {_fmt(result.added_ttfb_ms, 2)} ms to the median time to "
            f"first byte (the upstream's just before and after: "
            f"{_fmt(result.ttfb_p50 - result.added_ttfb_ms, 2)} ms)"
        )
    by_name = {result.name: result.load["rps"] for result in results}
    if relay.BASELINE in by_name:
        kept = by_name["through chatlens"] / by_name[relay.BASELINE]
        print(f"  this build serves {_fmt(100 * kept)} % of the baseline's requests/s")
    litellm = by_name.get("through LiteLLM")
    if litellm:
        for name in ("through chatlens", relay.STORING_FLOOR, relay.BARE_FLOOR):
            print(f"  {name}: {_fmt(by_name[name] / litellm)}x LiteLLM's requests/s")
        print(f"  20x LiteLLM would be {_fmt(20 * litellm)} requests/s")


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the chosen benchmarks; speed never changes the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        epilog=CHOICES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per load run (default 10)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument(
        "--only", choices=BENCHMARKS, help="run one benchmark (each described below)"
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=1_000_000,
        help="stop a load run after this many requests (default 1,000,000)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="observability: times both servers are started afresh (default 4)",
    )
    parser.add_argument(
        "--slice",
        type=float,
        default=1.0,
        help="observability: seconds of load per slice, alternating sides (default 1)",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=1_000_000,
        help="analytics: conversation_metrics rows to load (default 1,000,000)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="observability and relay: an earlier checkout with its own .venv (e.g. a git "
        "worktree after `make .venv/.installed-dev`), measured against this build: in "
        "observability its build is the off side, with the on side's settings",
    )
    parser.add_argument(
        "--relayed",
        action="store_true",
        help="observability: relayed /v1/chat/completions turns (openai backend, a fake "
        "upstream) instead of POST /chat",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="observability: both sides off, to show what the method reads with no difference",
    )
    parser.add_argument(
        "--sampler",
        choices=("ratio", "always", "both"),
        default="both",
        help="observability: the on side's trace sampling: ratio (parent-based, 10 %%, the "
        "production default), always (100 %%), or both, one run each (default)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin server and client to separate CPUs"
    )
    args = parser.parse_args(argv)
    if (
        args.duration <= 0
        or args.slice <= 0
        or min(args.concurrency, args.max_requests, args.rounds) < 1
    ):
        parser.error("--duration, --slice, --concurrency, --max-requests, --rounds: positive")

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"chatlens benchmarks · {now} · {os.cpu_count()} CPUs · "
        f"Python {platform.python_version()} · {platform.system()} {platform.machine()}"
    )
    shown = sys.argv[1:] if argv is None else argv
    print(f"command: {' '.join(['python -m benchmarks', *shown])} · code: {code_version()}")
    chosen = BENCHMARKS if args.only is None else (args.only,)
    for name in chosen:
        if name == "matching":
            run_matching()
        elif name == "chat":
            run_chat(args)
        elif name == "observability":
            run_observability(args)
        elif name == "relay":
            run_relay(args)
        elif name == "analytics":
            run_analytics(args)
        elif name == "instructions":
            print()
            instructions.main([])
        else:
            print()
            instrumentations.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
