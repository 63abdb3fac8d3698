"""Memory and multi-joint control (issue 16): asynca3c against rl-zoo's tuned SB3 agent, task by task.

Each seed trains both systems one after the other, never two at once,
alternating which goes first, under the same wall-clock budget. asynca3c
takes the settings ``asynca3c train`` would use (the default preset, the
shipped ``hyperparams.toml`` table of the env id, and of env id+wrapper for
masked CartPole, then ``--set`` overrides); the peer is SB3 PPO (sb3-contrib RecurrentPPO on
masked CartPole) with rl-baselines3-zoo's ``ppo.yml`` / ``ppo_lstm.yml``
settings (LunarLander-v2's for -v3, HalfCheetah-v4's and Hopper-v4's for
-v5, CartPoleNoVel-v1's for masked CartPole), normalization included.

Both are judged by the same rule: a run reaches the threshold when the mean
return of its last 100 training episodes (asynca3c: played without epsilon;
SB3 acts from its stochastic policy) first reaches it. Recorded per run: that
time and the env steps then, and the curve (seconds, env steps, last-100
mean) about once a second. Writes results.json, results.md and, with
matplotlib, curves.png (median and 25th-75th percentile band per system).

    python bench/bench_control.py --task lunarlander --seeds 3 --seconds 300 [--systems asynca3c] \
        [--set FIELD=JSON ...] [--threshold X] [--no-until-solved] [--peer-seconds S] [--peer-until-solved] \
        [--out bench/results/control/lunarlander]

A threshold counts as confirmed when asynca3c's 100 fresh episodes at the end
of the run average at least the threshold: with ``--no-until-solved`` that is
the policy the budget ends with, so "confirmed within the budget" means
exactly that. The peer can be given its own budget and stopping rule
(``--peer-seconds 900 --peer-until-solved``), to time how long it takes.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from asynca3c import train
from asynca3c.config_files import resolve

WINDOW = 100


def _lin(start: float):
    """rl-zoo's ``lin_X``: X times the fraction of the step budget still to go."""
    return lambda remaining: remaining * start


def _zoo_policy(**kw):
    """rl-zoo's policy_kwargs of the tasks that have them (all share these two)."""
    from torch import nn

    return {"ortho_init": False, "activation_fn": nn.ReLU, **kw}


_LUNAR = {"n_envs": 16, "n_timesteps": 1_000_000, "normalize": False,
          "kwargs": {"n_steps": 1024, "batch_size": 64, "gae_lambda": 0.98, "gamma": 0.999, "n_epochs": 4,
                     "ent_coef": 0.01}}
_MUJOCO_POLICY = {"log_std_init": -2, "net_arch": {"pi": [256, 256], "vf": [256, 256]}}

#: task -> env id, threshold, asynca3c's task settings, the peer and its rl-zoo settings.
TASKS = {
    "masked-cartpole": {
        "env": "CartPole-v1", "threshold": 475.0, "wrapper": "mask-velocity",
        "asynca3c": {"env_wrapper": "mask-velocity"},  # picks the shipped ["CartPole-v1+mask-velocity"] table
        "peer": "sb3-recurrentppo",  # ppo_lstm.yml CartPoleNoVel-v1
        "zoo": {"n_envs": 8, "n_timesteps": 100_000, "normalize": True,
                "kwargs": {"n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
                           "ent_coef": 0.0, "learning_rate": _lin(1e-3), "clip_range": _lin(0.2)},
                "policy": {"lstm_hidden_size": 64, "enable_critic_lstm": True,
                           "net_arch": {"pi": [64], "vf": [64]}}}},
    "lunarlander": {"env": "LunarLander-v3", "threshold": 200.0, "peer": "sb3-ppo", "zoo": _LUNAR},
    "lunarlander-continuous": {"env": "LunarLanderContinuous-v3", "threshold": 200.0, "peer": "sb3-ppo",
                               "zoo": _LUNAR},
    "halfcheetah": {
        "env": "HalfCheetah-v5", "threshold": None, "peer": "sb3-ppo",  # ppo.yml HalfCheetah-v4
        "zoo": {"n_envs": 1, "n_timesteps": 1_000_000, "normalize": True,
                "kwargs": {"n_steps": 512, "batch_size": 64, "gae_lambda": 0.92, "gamma": 0.98, "n_epochs": 20,
                           "ent_coef": 0.000401762, "learning_rate": 2.0633e-05, "clip_range": 0.1,
                           "max_grad_norm": 0.8, "vf_coef": 0.58096},
                "policy": _MUJOCO_POLICY}},
    "hopper": {
        "env": "Hopper-v5", "threshold": None, "peer": "sb3-ppo",  # ppo.yml Hopper-v4
        "zoo": {"n_envs": 1, "n_timesteps": 1_000_000, "normalize": True,
                "kwargs": {"n_steps": 512, "batch_size": 32, "gae_lambda": 0.99, "gamma": 0.999, "n_epochs": 5,
                           "ent_coef": 0.00229519, "learning_rate": 9.80828e-05, "clip_range": 0.2,
                           "max_grad_norm": 0.7, "vf_coef": 0.835671},
                "policy": _MUJOCO_POLICY}},
}


def run_asynca3c(task: dict, seed: int, seconds: float, threshold: float | None, until_solved: bool,
                 overrides: dict) -> dict:
    flags = {"env": task["env"], "seed": seed, "seconds": seconds, "until_solved": until_solved,
             **task.get("asynca3c", {}), **overrides}
    if threshold is not None:
        flags["reward_threshold"] = threshold
    cfg = resolve("default", flags)
    curve: list[tuple[float, int, float]] = []
    with tempfile.TemporaryDirectory() as run_dir:  # the run's files are not kept: the curve is
        r = train(cfg, run_dir=run_dir, on_progress=lambda row: curve.append(
            (row["seconds"], row["env_steps"], row["eval_return_mean"]))).to_dict()
    return {"system": "asynca3c", "seed": seed, "seconds": r["seconds"], "env_steps": r["env_steps"],
            "reward_threshold": r["reward_threshold"], "solved_after_seconds": r["solved_after_seconds"],
            "solved_after_steps": r["solved_after_steps"], "final_window_mean": r["eval_window_mean_return"],
            "fresh_eval_mean": r["eval_mean_return"], "steps_per_second": r["steps_per_second"],
            "stop_reason": r["stop_reason"], "curve": curve, "config": r["config"]}


def run_peer(task: dict, seed: int, seconds: float, threshold: float | None, until_solved: bool) -> dict:
    """The task's SB3 agent with rl-zoo's settings (``sb3_baselines.run``); the clock starts when ``learn``
    does."""
    import sb3_baselines

    from asynca3c.core.wrappers import wrap_env

    zoo, env_id, wrapper = dict(task["zoo"]), task["env"], task.get("wrapper", "")
    if "policy" in zoo:
        zoo["policy"] = _zoo_policy(**zoo["policy"])
    curve: list[tuple[float, int, float]] = []
    wrap = (lambda e: wrap_env(e, wrapper, env_id)) if wrapper else None
    r = sb3_baselines.run(task["peer"].removeprefix("sb3-"), env_id, seconds, seed=seed, until_solved=until_solved,
                          window=WINDOW, on_progress=lambda row: curve.append(
                              (row["seconds"], row["env_steps"], row["eval_return_mean"])),
                          zoo=zoo, threshold=threshold, wrap=wrap)
    curve.append((r["seconds"], r["env_steps"], r["eval_window_mean_return"]))
    return {"system": r["system"], "seed": seed, "seconds": r["seconds"], "env_steps": r["env_steps"],
            "reward_threshold": r["reward_threshold"], "solved_after_seconds": r["solved_after_seconds"],
            "solved_after_steps": r["solved_after_steps"], "final_window_mean": r["eval_window_mean_return"],
            "steps_per_second": r["steps_per_second"], "stop_reason": r["stop_reason"], "curve": curve}


def summary(runs: list[dict], systems: list[str]) -> str:
    """One row per system: runs that reached the threshold, median [min, max] time and steps to it."""
    lines = ["| system | reached | median s to threshold [range] | median steps to threshold | "
             "median final last-100 mean | fresh episodes at the end, per seed | confirmed at the end |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for name in systems:
        rs = [r for r in runs if r["system"] == name]
        t = [r["solved_after_seconds"] if r["solved_after_seconds"] is not None else math.inf for r in rs]
        st = [r["solved_after_steps"] if r["solved_after_steps"] is not None else math.inf for r in rs]
        lines.append(f"| {name} | {sum(math.isfinite(x) for x in t)}/{len(rs)} | {_fmt(statistics.median(t))} "
                     f"[{_fmt(min(t))}, {_fmt(max(t))}] | {_fmt(statistics.median(st), ',.0f')} | "
                     f"{_fmt(statistics.median(r['final_window_mean'] for r in rs), '.1f')} | "
                     f"{', '.join(_fmt(r.get('fresh_eval_mean')) for r in rs)} | {_confirmed(rs)} |")
    return "\n".join(lines)


def _confirmed(runs: list[dict]) -> str:
    """Runs whose fresh episodes at the end reached the threshold, of those that played them."""
    judged = [r for r in runs if r.get("fresh_eval_mean") is not None and r["reward_threshold"] is not None]
    if not judged:
        return "-"
    return f"{sum(r['fresh_eval_mean'] >= r['reward_threshold'] for r in judged)}/{len(judged)}"


def _append_problem(before: dict, header: dict, systems: list[str], seeds) -> str | None:
    """Why these runs cannot join ``before``'s (other settings, or a system and seed it already has), or
    None. Settings an older file did not record are not compared."""
    for key, value in header.items():
        if key in before and before[key] != value:
            return f"it was run with {key}={before[key]!r}, this run has {value!r}"
    names = {"asynca3c": "asynca3c", "peer": TASKS[header["task"]]["peer"]}
    have = {(r["system"], r["seed"]) for r in before["runs"]}
    for name in systems:
        for seed in seeds:
            if (names[name], seed) in have:
                return f"it already holds {names[name]} seed {seed} (pick other seeds with --first-seed)"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=list(TASKS), required=True)
    p.add_argument("--seeds", type=int, default=3, help="seeds F..F+S-1 (default 3)")
    p.add_argument("--first-seed", type=int, default=0, metavar="F")
    p.add_argument("--seconds", type=float, default=300.0, help="wall-clock budget per run (default 300)")
    p.add_argument("--systems", default="asynca3c,peer", help="comma-separated: asynca3c, peer (default both)")
    p.add_argument("--threshold", type=float, default=None,
                   help="return to reach (default: the task's, else the env spec's reward_threshold)")
    p.add_argument("--until-solved", action=argparse.BooleanOptionalAction, default=True,
                   help="stop a run when it reaches the threshold (default); --no-until-solved runs the budget")
    p.add_argument("--peer-seconds", type=float, default=None, help="the peer's budget (default --seconds)")
    p.add_argument("--peer-until-solved", action=argparse.BooleanOptionalAction, default=None,
                   help="the peer's stopping rule (default: as --until-solved)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override an asynca3c config field, e.g. --set lr=0.001 (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="default bench/results/control/TASK")
    p.add_argument("--append", action="store_true",
                   help="add these seeds' runs to OUT/results.json's (same task and --set overrides), so a long "
                        "benchmark can be run a few seeds at a time; the table and curves cover them all")
    args = p.parse_args(argv)
    task = TASKS[args.task]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not systems or set(systems) - {"asynca3c", "peer"}:
        p.error(f"--systems {args.systems!r}: a comma-separated list of asynca3c and peer")
    overrides = {name: json.loads(value) for name, _, value in (item.partition("=") for item in args.set)}
    threshold = args.threshold if args.threshold is not None else task["threshold"]
    peer_seconds = args.peer_seconds if args.peer_seconds is not None else args.seconds
    peer_until_solved = args.peer_until_solved if args.peer_until_solved is not None else args.until_solved
    out = args.out or Path("bench/results/control") / args.task
    out.mkdir(parents=True, exist_ok=True)

    runs = []
    header = {"task": args.task, "threshold": threshold, "overrides": overrides, "seconds": args.seconds,
              "until_solved": args.until_solved}
    if "peer" in systems:
        header.update(peer_seconds=peer_seconds, peer_until_solved=peer_until_solved)
    if args.append and (out / "results.json").exists():
        before = json.loads((out / "results.json").read_text())
        problem = _append_problem(before, header, systems, range(args.first_seed, args.first_seed + args.seeds))
        if problem:
            p.error(f"--append to {out}/results.json: {problem}")
        runs = before["runs"]
        header = {**{k: before[k] for k in ("peer_seconds", "peer_until_solved") if k in before}, **header}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in systems if seed % 2 == 0 else systems[::-1]:
            r = (run_asynca3c(task, seed, args.seconds, threshold, args.until_solved, overrides) if name == "asynca3c"
                 else run_peer(task, seed, peer_seconds, threshold, peer_until_solved))
            runs.append(r)
            print(f"seed {seed} {r['system']:17s} threshold {_fmt(r['solved_after_seconds'])} s "
                  f"{_fmt(r['solved_after_steps'], ',.0f')} steps; after {r['seconds']:.0f} s, "
                  f"{r['env_steps']:,} steps: last-100 mean {r['final_window_mean']:.1f}", flush=True)
            (out / "results.json").write_text(json.dumps(
                {"peer_seconds": peer_seconds, "peer_until_solved": peer_until_solved, **header, "env": task["env"],
                 "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
                 "runs": runs}, indent=2, default=str) + "\n")  # after every run: a long bench keeps what it did
    names = list(dict.fromkeys(r["system"] for r in runs))
    table = summary(runs, names)
    print(table)
    sets = "".join(f" --set {item}" for item in args.set)
    flags = "" if args.until_solved else " --no-until-solved"
    if args.peer_seconds is not None:
        flags += f" --peer-seconds {args.peer_seconds:g}"
    if args.peer_until_solved is not None:
        flags += " --peer-until-solved" if args.peer_until_solved else " --no-peer-until-solved"
    first = f" --first-seed {args.first_seed}" if args.first_seed else ""
    if args.append:
        seeds = sorted({r["seed"] for r in runs})
        flags += f" --append (the table covers every run in results.json: seeds {seeds[0]}-{seeds[-1]})"
    (out / "results.md").write_text(f"Command: python bench/bench_control.py --task {args.task} --seeds {args.seeds}"
                                    f"{first} --seconds {args.seconds:g} --systems {args.systems}{flags}{sets}\n\n"
                                    f"{table}\n")
    _plot(runs, names, out / "curves.png", f"{args.task} ({task['env']})", threshold)
    print(f"wrote {out}/results.json, results.md")
    return 0


def _plot(runs: list[dict], names: list[str], path: Path, title: str, threshold: float | None) -> None:
    from asynca3c.errors import CurveError
    from asynca3c.outputs.curves import Curve, plot

    groups = {name: [Curve(np.array([c[0] for c in r["curve"]], float), np.array([c[2] for c in r["curve"]], float),
                           threshold) for r in runs if r["system"] == name and r["curve"]] for name in names}
    try:
        print(f"wrote {plot(groups, path, title=title)}")
    except CurveError as e:
        print(f"no curves drawn: {e}")


def _fmt(x, spec=".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


if __name__ == "__main__":
    raise SystemExit(main())
