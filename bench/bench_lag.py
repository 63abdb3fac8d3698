"""Lag robustness: V-trace against the uncorrected update as the queue (and so the policy lag) grows.

Both systems are the defaults and differ only in ``importance_correction``:
``vtrace`` weights targets by pi/mu and clips the surrogate's ratio pi/mu;
``uncorrected`` computes targets as if every segment were on-policy and clips
the ratio against the learner's own policy before the batch, as PPO run
asynchronously without a correction would (``--clip-ratio 0`` compares the
plain policy gradients instead). The queue bound sets how far acting runs
ahead of learning, so the mean lag (learner version at the minibatch minus
the version that acted, in gradient steps) grows with it. Each (queue size, seed) trains
both systems one after the other, alternating which goes first, with
``until_solved`` under a wall-clock cap; a run counts as solved only when 100
fresh episodes confirm it. Writes results.json, results.md and curves.png
(evaluation return against seconds at the largest queue: median and
25th-75th percentile band over the seeds).

    python bench/bench_lag.py --queues 2,16,64 --seeds 3 --cap 30 --out bench/results/lag [--set FIELD=JSON ...]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from asynca3c import Config, train
from asynca3c.outputs.curves import plot, read_curve

SYSTEMS = {"vtrace": {"importance_correction": True}, "uncorrected": {"importance_correction": False}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queues", default="2,32,128", help="queue sizes, comma-separated (default 2,32,128)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--cap", type=float, default=30.0, help="wall-clock cap per run, seconds (default 30)")
    p.add_argument("--out", type=Path, default=Path("bench/results/lag"))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a config field for both systems, e.g. --set clip_ratio=0 (repeatable)")
    args = p.parse_args(argv)
    queues = [int(q) for q in args.queues.split(",")]
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value)
    runs = []
    for q in queues:
        for seed in range(args.seeds):
            order = list(SYSTEMS) if seed % 2 == 0 else list(SYSTEMS)[::-1]
            for name in order:
                run_dir = args.out / f"q{q}" / name / f"seed{seed}"
                cfg = Config(**{"seed": seed, "queue_size": q, "seconds": args.cap, "until_solved": True,
                                **overrides, **SYSTEMS[name]})
                r = train(cfg, run_dir=run_dir).to_dict()
                for weights in ("checkpoint.pt", "model.pt"):  # the curves and summaries are what is kept
                    (run_dir / weights).unlink(missing_ok=True)
                r.update(system=name, queue=q, confirmed=bool(r["solved"] and r["eval_mean_return"] >= 475))
                runs.append(r)
                print(f"queue {q:4d} seed {seed} {name:12s} lag {r['policy_lag_mean']:7.1f}  "
                      f"solved {_fmt(r['solved_after_seconds'])} s {_fmt(r['solved_after_steps'], ',.0f')} steps  "
                      f"eval {r['eval_mean_return']:.1f}", flush=True)
    lines = ["| queue | system | mean lag (median) | confirmed | median s to solve | median steps to solve |",
             "|---:|---|---:|---:|---:|---:|"]
    for q in queues:
        for name in SYSTEMS:
            rs = [r for r in runs if r["queue"] == q and r["system"] == name]
            t = [r["solved_after_seconds"] if r["confirmed"] else math.inf for r in rs]
            st = [r["solved_after_steps"] if r["confirmed"] else math.inf for r in rs]
            lag = statistics.median(r["policy_lag_mean"] for r in rs)
            lines.append(f"| {q} | {name} | {lag:.1f} | {sum(r['confirmed'] for r in rs)}/{len(rs)} | "
                         f"{_fmt(statistics.median(t))} | {_fmt(statistics.median(st), ',.0f')} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    sets = "".join(f" --set {item}" for item in args.set)
    (args.out / "results.md").write_text(f"Command: python bench/bench_lag.py --queues {args.queues} "
                                         f"--seeds {args.seeds} --cap {args.cap:g}{sets}\n\n{table}\n")
    (args.out / "results.json").write_text(json.dumps(runs, indent=2, default=str) + "\n")
    q = max(queues)
    groups = {f"{name} (queue {q})": [read_curve(d) for d in sorted((args.out / f"q{q}" / name).iterdir())]
              for name in SYSTEMS}
    print(f"wrote {plot(groups, args.out / 'curves.png', title=f'CartPole-v1, queue of {q} segments')}")
    return 0


def _fmt(x, spec=".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


if __name__ == "__main__":
    raise SystemExit(main())
