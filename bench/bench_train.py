"""Side-by-side training benchmark: time to solve CartPole-v1, throughput, memory, learning curves.

Systems, S seeds each, one run at a time (round-robin over seeds, so slow
drifts of a shared machine spread over every system), each run in its own
process with a wall-clock cap:

- ``asynca3c``: this package's defaults (V-trace on segments);
- ``asynca3c-nstep``: this package with ``--preset nstep`` (the n-step defaults before V-trace);
- ``asynca3c-seed``: this package with ``--preset seed`` (the article's constants);
- ``seed-threaded``: the article's threaded design in torch (bench/seed_threaded.py);
- ``sb3-a2c``, ``sb3-ppo``: stable-baselines3 with rl-zoo's CartPole-v1 settings
  (bench/sb3_baselines.py), when stable-baselines3 is installed.

One rule for all: solved when the mean return of the last 100 episodes played
without epsilon reaches the reward threshold (475), confirmed afterwards by 100
fresh evaluation episodes of the final policy (``asynca3c.core.evaluation.evaluate``
for every system). Wall clock counts from the start of training. Peak memory is
the run process's maximum resident set plus its largest child's (asynca3c's
learner process).

Writes OUT/results.json (every run), OUT/results.md (median, min, max per
system and ratios against the seed's design and stable-baselines3's best),
OUT/curves.png, and OUT/runs/SYSTEM/seedN/{progress.csv,summary.json}, which
``asynca3c plot OUT/runs/*`` draws again.

    python bench/bench_train.py --seeds 10 --cap 60 --out bench-results/train [--systems ...] [--device cpu]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SYSTEMS = ("asynca3c", "asynca3c-nstep", "asynca3c-seed", "seed-threaded", "sb3-a2c", "sb3-ppo")
SEED_BASELINE = "seed-threaded"
EVAL_EPISODES = 100


# --- one run, inside its own process ----------------------------------------------------------------


def _peak_memory_mib() -> float:
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (self_kib + child_kib) / 1024


def _write_progress(run_dir: Path, rows: list[dict]) -> None:
    fields = ["seconds", "env_steps", "steps_per_second", "episodes", "eval_return_mean"]
    with (run_dir / "progress.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _confirm(result: dict, policy, env_id: str, seed: int) -> dict:
    from asynca3c.core.evaluation import evaluate

    final = evaluate(policy, env_id, EVAL_EPISODES, seed=10_000 + seed)
    result.update(eval_mean_return=final.mean, eval_std_return=final.std, eval_episodes=len(final.returns))
    return result


def run_one(system: str, seed: int, cap: float, device: str, run_dir: Path, env_id: str,
            log_interval: float) -> dict:
    """Train one system once, until solved or the cap; the summary dict (also written to run_dir)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    if system.startswith("asynca3c"):
        from asynca3c.config import preset
        from asynca3c.runtime.trainer import train

        cfg = preset(system.partition("-")[2] or "default", env=env_id, seed=seed, seconds=cap,
                     until_solved=True, device=device, log_interval=log_interval,
                     final_eval_episodes=EVAL_EPISODES)
        result = train(cfg, run_dir=run_dir).to_dict()  # writes progress.csv and its own final evaluation
        result.pop("config")
    elif system == "seed-threaded":
        import seed_threaded

        result = seed_threaded.run(env_id, cap, seed=seed, until_solved=True, on_progress=rows.append,
                                   log_interval=log_interval)
        result = _confirm(result, result.pop("model"), env_id, seed)
    elif system.startswith("sb3-"):
        import sb3_baselines

        result = sb3_baselines.run(system[4:], env_id, cap, seed=seed, device=device, on_progress=rows.append,
                                   log_interval=log_interval)
        result = _confirm(result, sb3_baselines.policy_fn(result.pop("model")), env_id, seed)
    else:
        raise ValueError(f"system={system!r} is not allowed: one of {', '.join(SYSTEMS)}")
    if rows or not (run_dir / "progress.csv").exists():
        rows.append({"seconds": result["seconds"], "env_steps": result["env_steps"],
                     "steps_per_second": result["steps_per_second"], "episodes": result["episodes"],
                     "eval_return_mean": result["eval_window_mean_return"]})
        _write_progress(run_dir, rows)
    result.update(system=system, seed=seed, cap=cap, peak_memory_mib=_peak_memory_mib())
    threshold = result["reward_threshold"]
    result["confirmed"] = bool(result["solved"] and threshold is not None
                               and result["eval_mean_return"] >= threshold)
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


# --- the whole benchmark, in the parent process -------------------------------------------------------


def _time_to_solve(run: dict) -> float:
    return run["solved_after_seconds"] if run.get("confirmed") else math.inf


def _fmt_s(x: float, cap: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else f"> {cap:g}"


def _ratio(baseline: float, value: float, cap: float) -> str:
    """How many times faster than the baseline (median times); a bound when the baseline never solved."""
    if not math.isfinite(value):
        return "-"
    if not math.isfinite(baseline):
        return f"> {cap / value:.1f}x"
    return f"{baseline / value:.1f}x"


def summarize(runs: list[dict], cap: float) -> dict[str, dict]:
    """Per system: median, min and max of time to solve (unconfirmed runs count as never), and more."""
    out: dict[str, dict] = {}
    for system in dict.fromkeys(r["system"] for r in runs):
        mine = [r for r in runs if r["system"] == system]
        ok = [r for r in mine if "error" not in r]
        times = [_time_to_solve(r) for r in mine]
        steps = [r["solved_after_steps"] for r in ok if r.get("confirmed")]
        out[system] = {
            "runs": len(mine), "confirmed": sum(bool(r.get("confirmed")) for r in mine),
            "errors": len(mine) - len(ok),
            "time_median": statistics.median(times), "time_min": min(times), "time_max": max(times),
            "steps_to_solve_median": statistics.median(steps) if steps else None,
            "steps_per_second_median": statistics.median(r["steps_per_second"] for r in ok) if ok else None,
            "steps_per_second_min": min(r["steps_per_second"] for r in ok) if ok else None,
            "steps_per_second_max": max(r["steps_per_second"] for r in ok) if ok else None,
            "eval_return_median": statistics.median(r["eval_mean_return"] for r in ok) if ok else None,
            "peak_memory_mib_median": statistics.median(r["peak_memory_mib"] for r in ok) if ok else None,
        }
    sb3 = {s: v for s, v in out.items() if s.startswith("sb3-")}
    best_sb3 = min(sb3, key=lambda s: sb3[s]["time_median"]) if sb3 else None
    for v in out.values():
        base = out.get(SEED_BASELINE)
        v["speedup_vs_seed_design"] = _ratio(base["time_median"], v["time_median"], cap) if base else "-"
        v["speedup_vs_sb3_best"] = (_ratio(out[best_sb3]["time_median"], v["time_median"], cap)
                                    if best_sb3 else "-")
        v["throughput_vs_seed_design"] = (f"{v['steps_per_second_median'] / base['steps_per_second_median']:.0f}x"
                                          if base and base["steps_per_second_median"] and
                                          v["steps_per_second_median"] else "-")
    if best_sb3:
        out[best_sb3]["sb3_best"] = True
    return out


def markdown(summary: dict[str, dict], cap: float, seeds: int) -> str:
    """The results table: one row per system."""
    lines = [
        f"Time to solve CartPole-v1 (wall clock from the start of training; {seeds} seeds, cap {cap:g} s; "
        "a run counts only when 100 fresh episodes confirm it; '> cap' = not solved within the cap):",
        "",
        "| system | solved | time to solve, median [min, max] (s) | steps to solve (median) "
        "| env steps/s, median [min, max] | peak memory (MiB) | faster than the seed's design "
        "| faster than SB3's best | steps/s vs seed's design |",
        "|---|:---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system, v in summary.items():
        name = f"{system} (SB3's best)" if v.get("sb3_best") else system
        sps = (f"{v['steps_per_second_median']:,.0f} [{v['steps_per_second_min']:,.0f}, "
               f"{v['steps_per_second_max']:,.0f}]" if v["steps_per_second_median"] else "-")
        steps = f"{v['steps_to_solve_median']:,.0f}" if v["steps_to_solve_median"] else "-"
        mem = f"{v['peak_memory_mib_median']:,.0f}" if v["peak_memory_mib_median"] else "-"
        errors = f", {v['errors']} failed" if v["errors"] else ""
        lines.append(
            f"| {name} | {v['confirmed']}/{v['runs']}{errors} | {_fmt_s(v['time_median'], cap)} "
            f"[{_fmt_s(v['time_min'], cap)}, {_fmt_s(v['time_max'], cap)}] | {steps} | {sps} | {mem} "
            f"| {v['speedup_vs_seed_design']} | {v['speedup_vs_sb3_best']} | {v['throughput_vs_seed_design']} |")
    return "\n".join(lines) + "\n"


def _machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _run_in_subprocess(system: str, seed: int, args, run_dir: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--seed", str(seed),
           "--cap", str(args.cap), "--device", args.device, "--env", args.env,
           "--log-interval", str(args.log_interval), "--run-dir", str(run_dir)]
    limit = args.cap + 300  # start-up, final evaluation and writing, with room for a slow machine
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"system": system, "seed": seed, "error": f"no result within {limit:g} s", "confirmed": False,
                "solved_after_seconds": None}
    summary = run_dir / "summary.json"
    if proc.returncode != 0 or not summary.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"system": system, "seed": seed, "error": f"exit {proc.returncode}: " + " | ".join(tail),
                "confirmed": False, "solved_after_seconds": None}
    return json.loads(summary.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..S-1 per system (default 10)")
    p.add_argument("--cap", type=float, default=60.0, help="wall-clock cap per run in seconds (default 60)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all; sb3-* skipped "
                        "when stable-baselines3 is missing)")
    p.add_argument("--device", default="cpu", help="torch device for asynca3c and SB3: cpu, cuda or auto")
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--log-interval", type=float, default=0.25, help="seconds between curve points (default 0.25)")
    p.add_argument("--out", type=Path, default=Path("bench-results/train"), help="output directory")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one system once in this process
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        run_one(args.worker, args.seed, args.cap, args.device, args.run_dir, args.env, args.log_interval)
        return 0

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s) {', '.join(unknown)}: allowed are {', '.join(SYSTEMS)}")
    if args.seeds < 1 or args.cap <= 0:
        p.error(f"--seeds must be >= 1 and --cap > 0, got {args.seeds} and {args.cap:g}")
    import sb3_baselines

    if not sb3_baselines.available():
        skipped = [s for s in systems if s.startswith("sb3-")]
        systems = [s for s in systems if not s.startswith("sb3-")]
        if skipped:
            print(f"stable-baselines3 is not installed: skipping {', '.join(skipped)} "
                  "(pip install stable-baselines3)", file=sys.stderr)

    command = "python bench/bench_train.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"{args.env}: {', '.join(systems)}; {args.seeds} seeds, cap {args.cap:g} s per run, device {args.device}")
    print("| seed | system | solved after (s) | steps to solve | steps/s | eval return | peak MiB | confirmed |")
    print("|---:|---|---:|---:|---:|---:|---:|:---:|", flush=True)
    runs: list[dict] = []
    started = time.time()
    for seed in range(args.seeds):
        for system in systems:
            r = _run_in_subprocess(system, seed, args, args.out / "runs" / system / f"seed{seed}")
            runs.append(r)
            if "error" in r:
                print(f"| {seed} | {system} | failed: {r['error']} |", flush=True)
                continue
            t = r["solved_after_seconds"]
            print(f"| {seed} | {system} | {_fmt_s(t if t is not None else math.inf, args.cap)} | "
                  f"{r['solved_after_steps'] or '-'} | {r['steps_per_second']:,.0f} | {r['eval_mean_return']:.1f} | "
                  f"{r['peak_memory_mib']:,.0f} | {'yes' if r['confirmed'] else 'no'} |", flush=True)

    summary = summarize(runs, args.cap)
    table = markdown(summary, args.cap, args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": command, "env": args.env, "seeds": args.seeds, "cap": args.cap, "device": args.device,
              "machine": _machine(), "wall_seconds": time.time() - started, "summary": summary, "runs": runs}
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(f"`{command}`\n\n" + table)

    from asynca3c.outputs.curves import CurveError, plot, read_curve, runs_under

    try:
        groups = {s: [read_curve(d) for d in runs_under(args.out / "runs" / s)] for s in systems}
        png = plot(groups, args.out / "curves.png",
                   title=f"{args.env}: median over {args.seeds} seeds (shaded: 25th-75th percentile)")
    except CurveError as e:
        png = None
        print(f"no curves: {e}", file=sys.stderr)
    print("\n" + table)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
