"""Acting throughput against the number of shard processes, while training.

For each environment, asynca3c trains for ``--seconds`` with every agent on
the trainer's loop (``shards=0``) and with 1, 2, ... shard processes; runs
alternate (0, 1, 2, 0, 1, 2, ...) for ``--repeats`` rounds so the machine's
drift falls on every count alike. The agents are fixed (``--agents`` of
``--envs`` environments each) and split over the shards, so the work is the
same and only where it runs changes. Reported: env steps/s (median and range),
the scaling efficiency steps/s(k) / (k x steps/s(1)) (target >= 0.8 up to the
core count), 2 shards against 1 (target >= 1.5x on 2 cores), and the
trainer's loop lag.

    python bench/bench_shards.py [--envs-list CartPole-v1,Acrobot-v1] [--shards 0,1,2] [--repeats 3]
                                 [--seconds 15] [--json out.json] [--plot out.png]
    python bench/bench_shards.py --replot out.json --plot out.png   # redraw a saved run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

from asynca3c import Config, train


def run(env: str, shards: int, agents: int, envs: int, seconds: float, seed: int) -> dict:
    cfg = Config(env=env, shards=shards, agents=agents, envs_per_agent=envs, seconds=seconds, seed=seed,
                 final_eval_episodes=0, log_interval=max(1.0, seconds / 3))
    r = train(cfg)
    return {"env": env, "shards": shards, "seed": seed, "steps_per_second": r.steps_per_second,
            "env_steps": r.env_steps, "updates": r.updates, "loop_lag_p99_ms": r.loop_lag_p99_ms,
            "eval_window_mean_return": r.eval_window_mean_return, "shard_restarts": r.shard_restarts}


def plot(summary: list[dict], path: str) -> None:
    """Steps/s against shard count per environment (median and range), beside linear scaling from 1 shard."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for env in dict.fromkeys(s["env"] for s in summary):
        rows = sorted((s for s in summary if s["env"] == env), key=lambda s: s["shards"])
        ks = [s["shards"] for s in rows]
        med = [s["median"] for s in rows]
        err = [[s["median"] - s["min"] for s in rows], [s["max"] - s["median"] for s in rows]]
        line = ax.errorbar(ks, med, yerr=err, marker="o", capsize=3, label=env)
        one = next((s["median"] for s in rows if s["shards"] == 1), None)
        if one:
            top = [k for k in ks if k >= 1]
            ax.plot(top, [one * k for k in top], ls=":", color=line[0].get_color(), label=f"{env}: linear from 1")
    ax.set_xlabel("shards (0: agents on the trainer's loop)")
    ax.set_ylabel("env steps/s while training")
    ax.set_yscale("log")
    ax.set_xticks(sorted({s["shards"] for s in summary}))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs-list", default="CartPole-v1,Acrobot-v1", help="comma-separated gymnasium ids")
    p.add_argument("--shards", default="0,1,2", help="comma-separated shard counts (0: the trainer's loop)")
    p.add_argument("--agents", type=int, default=4, help="agents in all (split over the shards; default 4)")
    p.add_argument("--envs", type=int, default=16, help="environments per agent (default 16)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of every shard count (default 3)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per run (default 15)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PNG", help="draw steps/s against shards here (needs matplotlib)")
    p.add_argument("--replot", metavar="JSON", help="only redraw --plot from a saved --json")
    args = p.parse_args(argv)
    if args.replot:
        if not args.plot:
            p.error("--replot needs --plot")
        plot(json.loads(Path(args.replot).read_text())["summary"], args.plot)
        return 0
    envs = args.envs_list.split(",")
    counts = [int(k) for k in args.shards.split(",")]
    print(f"acting shards: {args.agents} agents x {args.envs} envs, {args.seconds:g} s per run, "
          f"{args.repeats} rounds, {os.cpu_count()} cores", flush=True)
    runs: list[dict] = []
    for env in envs:
        for r in range(args.repeats):
            for k in counts:
                out = run(env, k, args.agents, args.envs, args.seconds, seed=r)
                runs.append(out)
                print(f"  {env} shards={k} seed={r}: {out['steps_per_second']:,.0f} steps/s, "
                      f"loop lag p99 {out['loop_lag_p99_ms']:.1f} ms", flush=True)
    print("\n| env | shards | steps/s median | range | vs 1 shard | scaling efficiency | loop lag p99 (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary = []
    for env in envs:
        med = {k: statistics.median(x["steps_per_second"] for x in runs if x["env"] == env and x["shards"] == k)
               for k in counts}
        for k in counts:
            sps = [x["steps_per_second"] for x in runs if x["env"] == env and x["shards"] == k]
            lag = statistics.median(x["loop_lag_p99_ms"] for x in runs if x["env"] == env and x["shards"] == k)
            one = med.get(1)
            vs_one = f"{med[k] / one:.2f}x" if one and k >= 1 else "-"
            eff = f"{med[k] / (k * one):.2f}" if one and k >= 1 else "-"
            summary.append({"env": env, "shards": k, "median": med[k], "min": min(sps), "max": max(sps),
                            "vs_one_shard": med[k] / one if one and k >= 1 else None, "loop_lag_p99_ms": lag})
            print(f"| {env} | {k} | {med[k]:,.0f} | {min(sps):,.0f}-{max(sps):,.0f} | {vs_one} | {eff} | "
                  f"{lag:.1f} |")
        if 1 in med and 2 in med:
            ratio = med[2] / med[1]
            print(f"target {env}: 2 shards >= 1.5x one shard: {'holds' if ratio >= 1.5 else 'MISSED'} "
                  f"({ratio:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": platform.platform(),
                                               "cores": os.cpu_count(), "runs": runs, "summary": summary},
                                              indent=2))
        print(f"wrote {args.json}")
    if args.plot:
        plot(summary, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
