"""``asynca3c bench returns``: the n-step return kernel's microbenchmark (the harness lives in
``asynca3c.core._kernel_bench``; ``bench/bench_returns.py`` runs this same command)."""

from __future__ import annotations

import argparse
import json

from asynca3c.cli.common import OneLineErrorParser


def _int_in(low: int, high: int):
    """An argparse type: an integer in [low, high] (the benchmark allocates in proportion to it)."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low:,}, {high:,}], got {s!r}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low:,}, {high:,}], got {s}")
        return v

    return parse


def _gamma(s: str) -> float:
    v = float(s)
    if not 0.0 < v <= 1.0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (the seed's update divides by gamma), got {s}")
    return v


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="microbenchmarks")
    bench_sub = bench.add_subparsers(parser_class=OneLineErrorParser, dest="bench", required=True,
                                     metavar="BENCHMARK")
    p = bench_sub.add_parser("returns", help="the n-step and V-trace kernels against Python and numpy",
                             description="Time the n-step return systems (ns per transition), then the V-trace "
                                         "systems (ns per step of a [T, E] segment batch).")
    p.set_defaults(run=run_returns)
    p.add_argument("--envs", type=_int_in(1, 65_536), default=64, help="environments per batch (default 64)")
    p.add_argument("--n", type=_int_in(1, 10_000), default=8, help="n of the n-step returns (default 8)")
    p.add_argument("--gamma", type=_gamma, default=0.99, help="discount in (0, 1] (default 0.99)")
    p.add_argument("--steps", type=_int_in(1, 10**9), default=1_000_000,
                   help="transitions per measurement, rounded up to a multiple of --envs (default 1000000)")
    p.add_argument("--repeats", type=_int_in(1, 1_000), default=5, help="measurements per system (default 5)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="random seed of the data (default 0)")
    p.add_argument("--check-steps", type=_int_in(1, 10**8), default=20_000,
                   help="transitions of the agreement check run before timing (default 20000)")
    p.add_argument("--vtrace-steps", type=_int_in(1, 10_000), default=20, metavar="T",
                   help="segment length T of the V-trace measurement (default 20)")
    p.add_argument("--vtrace-envs", type=_int_in(1, 65_536), default=256, metavar="E",
                   help="environments E per segment batch of the V-trace measurement (default 256)")
    p.add_argument("--vtrace-batches", type=_int_in(1, 10_000), default=20,
                   help="segment batches per V-trace measurement (default 20)")
    p.add_argument("--json", metavar="PATH", help="write all figures, parameters and machine info here")


def run_returns(args: argparse.Namespace) -> int:
    from asynca3c.core._kernel_bench import format_table, format_targets, run_benchmark
    from asynca3c.core._vtrace_bench import format_vtrace, run_vtrace_benchmark

    print(f"n-step returns: envs={args.envs} n={args.n} gamma={args.gamma} steps={args.steps} "
          f"repeats={args.repeats}")
    report = run_benchmark(envs=args.envs, n=args.n, gamma=args.gamma, steps=args.steps,
                           repeats=args.repeats, seed=args.seed, check_steps=args.check_steps)
    print(format_table(report))
    print(format_targets(report))
    report["vtrace"] = run_vtrace_benchmark(T=args.vtrace_steps, E=args.vtrace_envs, batches=args.vtrace_batches,
                                            repeats=args.repeats, seed=args.seed)
    print(format_vtrace(report["vtrace"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0 if report["agreement"]["ok"] and report["vtrace"]["agreement"]["ok"] else 1

