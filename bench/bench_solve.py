"""Time to solve an environment (CartPole-v1 by default) and training throughput, over several seeds.

Each seed trains with ``until_solved`` under a wall-clock cap, one run after
another (never two at once), with the settings ``asynca3c train`` would use
(the preset, the shipped ``hyperparams.toml`` table for the default preset,
then ``--set`` overrides); a run counts as solved only when the 100 fresh
evaluation episodes afterwards confirm the threshold. Prints a table per seed,
the median and worst time, the throughput, and for CartPole-v1 whether the
first issue's targets hold (median <= 5 s, every seed <= 15 s and confirmed,
>= 150k steps/s).

    python bench/bench_solve.py --seeds 10 --json solve.json [--preset seed] [--set FIELD=JSON ...]
    python bench/bench_solve.py --env Pendulum-v1 --set reward_threshold=-200 --set until_solved=false --cap 60

With ``until_solved=false`` every run trains for the whole cap; "solved after" is then when the window
first reached the threshold, and the fresh episodes judge the policy at the cap.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys

from asynca3c import Config, train
from asynca3c.config_files import resolve

TARGET_MEDIAN_S, TARGET_MAX_S, TARGET_STEPS_PER_S = 5.0, 15.0, 150_000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds F..F+S-1 (default 10)")
    p.add_argument("--first-seed", type=int, default=0, metavar="F", help="the first seed (default 0)")
    p.add_argument("--cap", type=float, default=15.0, help="wall-clock cap per run in seconds (default 15)")
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--preset", default="default")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a config field, e.g. --set lr=0.003 (repeatable)")
    p.add_argument("--json", metavar="PATH", help="write every run's summary here")
    args = p.parse_args(argv)
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value)

    runs = []
    print(f"{args.env}, preset {args.preset} {overrides or ''}, {args.seeds} seeds, cap {args.cap:g} s")
    print("| seed | solved after (s) | steps to solve | steps/s | updates | eval return (100 fresh) | confirmed |")
    print("|---:|---:|---:|---:|---:|---:|:---:|")
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        cfg: Config = resolve(args.preset, {"env": args.env, "seed": seed, "seconds": args.cap,
                                            "until_solved": True, **overrides})
        r = train(cfg).to_dict()
        r["confirmed"] = bool(r["solved"] and r["eval_mean_return"] >= r["reward_threshold"])
        runs.append(r)
        t = r["solved_after_seconds"]
        print(f"| {seed} | {t:.2f} | {r['solved_after_steps']:,} |" if t is not None else f"| {seed} | - | - |",
              f"{r['steps_per_second']:,.0f} | {r['updates']:,} | {r['eval_mean_return']:.1f} | "
              f"{'yes' if r['confirmed'] else 'no'} |", flush=True)

    times = [r["solved_after_seconds"] if r["confirmed"] else float("inf") for r in runs]
    median, worst = statistics.median(times), max(times)
    sps = statistics.median(r["steps_per_second"] for r in runs)
    holds = {} if args.env != "CartPole-v1" else {
        f"median time to solve <= {TARGET_MEDIAN_S:g} s": median <= TARGET_MEDIAN_S,
        f"every seed solved and confirmed within {TARGET_MAX_S:g} s": worst <= TARGET_MAX_S,
        f"median throughput >= {TARGET_STEPS_PER_S:,} steps/s": sps >= TARGET_STEPS_PER_S,
    }
    print(f"\nmedian time to solve {median:.2f} s, worst {worst:.2f} s "
          f"({sum(r['confirmed'] for r in runs)}/{len(runs)} confirmed); median {sps:,.0f} steps/s")
    for name, ok in holds.items():
        print(f"target: {name}: {'holds' if ok else 'MISSED'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"env": args.env, "preset": args.preset, "overrides": overrides, "cap": args.cap,
                       "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                                   "processor": platform.processor()},
                       "median_seconds": median, "worst_seconds": worst, "median_steps_per_second": sps,
                       "targets": holds, "runs": runs}, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
