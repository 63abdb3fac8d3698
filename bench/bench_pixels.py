"""Pixels (issue 15): Atari throughput and learning curves against SB3 A2C with rl-zoo's Atari settings.

    python bench/bench_pixels.py throughput [--env ALE/Pong-v5] [--seconds 60] [--repeats 2]
    python bench/bench_pixels.py curve --system asynca3c|sb3-a2c [--seed 0] [--seconds 1800] [--encoder nature|a3c]
                                      [--label NAME] [--set FIELD=JSON ...]
    python bench/bench_pixels.py plot
    python bench/bench_pixels.py lag [--seconds 60] [--repeats 2] [--encoder nature|a3c]
    python bench/bench_pixels.py shards [--shards 2] [--seconds 60] [--repeats 2] [--encoder nature|a3c]

``throughput`` trains each system for ``--seconds`` per repeat, alternating the
order, and reports agent steps/s while training (each sample learned from
once): asynca3c with the shipped table and the Nature CNN, SB3 A2C (its
CnnPolicy is the same Nature CNN), and asynca3c with the A3C paper's CNN. In the
same run it measures the machine's ceiling: torch's forward passes/s and
forward+backward samples/s of each CNN on all cores, and the emulator's steps/s
(ale-py's vector env, 16 envs, random actions); acting plus learning caps at
1 / (1/forward + 1/train + 1/emulator) samples/s. asynca3c's transport costs
(bytes per sample through shared memory, weight bytes per second in learner
replies, share of the wall time spent copying frames into slots and reading
replies) come from its learner client.

``curve`` runs one system for ``--seconds`` and records (seconds, steps,
mean return of the last 10 whole games) every 10 s: ``results/pixels/<game>/
<system>-seed<N>.json``; ``plot`` draws every curve there into curves.png and
writes curves.md, with each asynca3c curve set against SB3 A2C's with the same
CNN: the minute from which it stays above, and the share of points above. Run
the curves one at a time: they share the 2 cores.

``shards`` trains with ``--shards`` acting shard processes, alternating how
their segments' frames and weights cross: through the trainer's shared memory
(``runtime/shard_frames.py``, ``runtime/shard_weights.py``) or pickled through
the shards' pipes (what they did before), and reports steps/s, the trainer
process's CPU time per agent step (its loop reads every frame) and its loop
lag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

OUT = Path("bench/results/pixels")
WINDOW = 10  # games averaged for a curve point (a Pong game is 800-4,000 agent steps)

#: rl-baselines3-zoo a2c.yml, atari: AtariWrapper, 4-frame stack, CnnPolicy, 16 envs, ent 0.01, vf 0.25,
#: RMSpropTFLike(eps=1e-5); the rest SB3's defaults (n_steps 5, lr 7e-4, gamma 0.99, max_grad_norm 0.5)
A2C_ZOO = {"n_envs": 16, "ent_coef": 0.01, "vf_coef": 0.25}


def asynca3c_config(env_id: str, seconds: float, seed: int, **overrides):
    from asynca3c.config_files import resolve

    return resolve("default", {"env": env_id, "seed": seed, "seconds": seconds, "final_eval_episodes": 0,
                               "until_solved": False, **overrides})


def run_asynca3c(env_id: str, seconds: float, seed: int, on_row=None, **overrides) -> dict:
    """One run with the shipped table (and ``overrides``); its speed and transport figures."""
    from asynca3c import Trainer

    cfg = asynca3c_config(env_id, seconds, seed, **overrides)

    async def main():
        trainer = Trainer(cfg, on_progress=on_row)
        result = await trainer.run()
        return result, trainer._run.learner.transport

    result, transport = asyncio.run(main())
    out = {"system": f"asynca3c-{cfg.encoder}", "seconds": result.seconds, "env_steps": result.env_steps,
           "steps_per_second": result.steps_per_second, "loop_lag_p99_ms": result.loop_lag_p99_ms,
           "loop_lag_max_ms": result.loop_lag_max_ms,
           "policy_lag_mean": result.policy_lag_mean, "config": cfg.to_dict()}
    if transport is not None and result.seconds:
        out.update(frame_bytes_per_sample=transport.frame_bytes / max(1, transport.frame_samples),
                   weight_bytes_per_second=transport.weight_bytes / result.seconds,
                   transport_share=(transport.frame_seconds + transport.reply_seconds) / result.seconds,
                   inline_batches=transport.inline_batches)
    return out


def a3c_paper_extractor():
    """SB3's features extractor for the A3C paper's CNN, as asynca3c's ``a3c`` encoder builds it (16 8x8/4,
    32 4x4/2, 256 features), so both systems can be compared on the same small network."""
    import torch
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from torch import nn

    class A3CPaperCNN(BaseFeaturesExtractor):
        def __init__(self, observation_space, features_dim: int = 256):
            super().__init__(observation_space, features_dim)
            channels = observation_space.shape[0]
            self.cnn = nn.Sequential(nn.Conv2d(channels, 16, 8, 4), nn.ReLU(), nn.Conv2d(16, 32, 4, 2), nn.ReLU(),
                                     nn.Flatten())
            with torch.no_grad():
                width = self.cnn(torch.as_tensor(observation_space.sample()[None]).float()).shape[1]
            self.linear = nn.Sequential(nn.Linear(width, features_dim), nn.ReLU())

        def forward(self, observations):
            return self.linear(self.cnn(observations))

    return A3CPaperCNN


def run_a2c(env_id: str, seconds: float, seed: int, on_row=None, encoder: str = "nature") -> dict:
    """SB3 A2C with rl-zoo's Atari settings on the same game (ALE v5 with frameskip 1 and no sticky actions
    underneath, as NoFrameskip-v4); returns are the Monitor's whole games, the clock starts with ``learn``.
    ``encoder``: 'nature' (CnnPolicy's own NatureCNN) or 'a3c' (the A3C paper's CNN)."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(env_id, n_envs=A2C_ZOO["n_envs"], seed=seed,
                                       env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0}), 4)
    policy_kwargs: dict = {"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}}
    if encoder == "a3c":
        policy_kwargs["features_extractor_class"] = a3c_paper_extractor()
    model = A2C("CnnPolicy", env, seed=seed, device="cpu", verbose=0, ent_coef=A2C_ZOO["ent_coef"],
                vf_coef=A2C_ZOO["vf_coef"], policy_kwargs=policy_kwargs)
    games: deque[float] = deque(maxlen=WINDOW)
    clock = {"t0": 0.0, "next": 10.0}

    class Clock(BaseCallback):
        def _on_training_start(self) -> None:
            clock["t0"] = time.perf_counter()

        def _on_step(self) -> bool:
            elapsed = time.perf_counter() - clock["t0"]
            for info in self.locals["infos"]:
                if "episode" in info:
                    games.append(float(info["episode"]["r"]))
            if on_row is not None and elapsed >= clock["next"]:
                clock["next"] += 10.0
                on_row({"seconds": elapsed, "env_steps": self.num_timesteps, "games": list(games)})
            return elapsed < seconds

    model.learn(total_timesteps=10**9, callback=Clock())
    elapsed = time.perf_counter() - clock["t0"]
    env.close()
    return {"system": "sb3-a2c" if encoder == "nature" else f"sb3-a2c-{encoder}", "seconds": elapsed,
            "env_steps": model.num_timesteps,
            "steps_per_second": model.num_timesteps / elapsed}


def ceiling(env_id: str, seconds: float = 3.0) -> dict:
    """Forward passes/s (batches of 32) and forward+backward samples/s (batches of 80) of each CNN with
    torch on all cores, and the emulator's steps/s (16 envs, random actions)."""
    import torch

    from asynca3c.core.atari import make_atari_vector

    torch.set_num_threads(os.cpu_count() or 1)
    out: dict = {"torch_threads": torch.get_num_threads()}
    for encoder in ("nature", "a3c"):
        out[f"{encoder}_forward_per_s"], out[f"{encoder}_train_per_s"] = _torch_rates(encoder, seconds)
    envs = make_atari_vector(env_id, 16, training=True)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    n = int(envs.single_action_space.n)
    out["emulator_steps_per_s"] = _rate(lambda: envs.step(rng.integers(0, n, 16)), 16, seconds)
    envs.close()
    for encoder in ("nature", "a3c"):
        f, t, e = out[f"{encoder}_forward_per_s"], out[f"{encoder}_train_per_s"], out["emulator_steps_per_s"]
        out[f"{encoder}_ceiling_torch"] = 1 / (1 / f + 1 / t)
        out[f"{encoder}_ceiling"] = 1 / (1 / f + 1 / t + 1 / e)
    torch.set_num_threads(1)
    return out


def _torch_rates(encoder: str, seconds: float) -> tuple[float, float]:
    """(forward passes/s in batches of 32, training samples/s in batches of 80) of one CNN."""
    import torch

    from asynca3c.core.model import ActorCritic

    model = ActorCritic(4 * 84 * 84, 6, encoder=encoder, obs_shape=(4, 84, 84)).use_channels_last()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-4)
    frames = torch.randint(0, 256, (80, 4, 84, 84), dtype=torch.uint8)

    def train_step():
        logits, values = model(frames)
        (logits.logsumexp(-1).mean() + values.pow(2).mean()).backward()
        opt.step()
        opt.zero_grad()

    with torch.inference_mode():
        forward = _rate(lambda: model(frames[:32]), 32, seconds)
    return forward, _rate(train_step, 80, seconds)


def _rate(fn, per_call: int, seconds: float) -> float:
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * per_call / (time.perf_counter() - start)


def throughput(args) -> int:
    runs: list[dict] = []
    systems = ["nature", "sb3-a2c", "a3c"]
    ceilings = []
    for repeat in range(args.repeats):
        ceilings.append(ceiling(args.env))
        print(f"ceiling {repeat}: " + ", ".join(f"{k} {v:,.0f}" for k, v in ceilings[-1].items()), flush=True)
        for name in systems if repeat % 2 == 0 else systems[::-1]:
            if name == "sb3-a2c":
                r = run_a2c(args.env, args.seconds, repeat)
            else:
                r = run_asynca3c(args.env, args.seconds, repeat, encoder=name)
            r["repeat"] = repeat
            runs.append(r)
            print(f"repeat {repeat} {r['system']:16s} {r['steps_per_second']:,.0f} steps/s", flush=True)
    names = list(dict.fromkeys(r["system"] for r in runs))
    med = {n: statistics.median(r["steps_per_second"] for r in runs if r["system"] == n) for n in names}
    rows = ["| system | agent steps/s, median [range] | x SB3 A2C | share of the ceiling | bytes/sample (shm) | "
            "weight MB/s | transport share | loop lag p99 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        rs = [r for r in runs if r["system"] == n]
        sps = [r["steps_per_second"] for r in rs]
        enc = "nature" if n in ("sb3-a2c", "asynca3c-nature") else "a3c"
        ceil = statistics.median(c[f"{enc}_ceiling"] for c in ceilings)
        extra = "| - | - | - | -"
        if "frame_bytes_per_sample" in rs[0]:
            extra = (f"| {statistics.median(r['frame_bytes_per_sample'] for r in rs):,.0f} | "
                     f"{statistics.median(r['weight_bytes_per_second'] for r in rs) / 1e6:.1f} | "
                     f"{statistics.median(r['transport_share'] for r in rs):.1%} | "
                     f"{statistics.median(r['loop_lag_p99_ms'] for r in rs):.1f}")
        rows.append(f"| {n} | {med[n]:,.0f} [{min(sps):,.0f}, {max(sps):,.0f}] | {med[n] / med['sb3-a2c']:.2f} | "
                    f"{med[n] / ceil:.0%} of {ceil:,.0f} {extra} |")
    ceil_rows = ["| figure (all cores) | median [range] |", "|---|---:|"]
    for key in ceilings[0]:
        v = [c[key] for c in ceilings]
        ceil_rows.append(f"| {key} | {statistics.median(v):,.0f} [{min(v):,.0f}, {max(v):,.0f}] |")
    text = (f"Command: python bench/bench_pixels.py throughput --env {args.env} --seconds {args.seconds:g} "
            f"--repeats {args.repeats}\n\n" + "\n".join(rows) + "\n\nCeiling, measured in the same run:\n\n"
            + "\n".join(ceil_rows) + "\n")
    print(text)
    out = OUT / _game(args.env)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.md").write_text(text)
    (out / "throughput.json").write_text(json.dumps({"env": args.env, "runs": runs, "ceilings": ceilings,
                                                     "machine": platform.platform()}, indent=2, default=str))
    return 0


def lag(args) -> int:
    """The trainer loop's lag while training, with the work threads below the loop's priority (the
    shipped ``work_nice``) and at its priority (0), alternated: p99 and max of each run."""
    runs = []
    for repeat in range(args.repeats):
        for nice in (10, 0) if repeat % 2 == 0 else (0, 10):
            r = run_asynca3c(args.env, args.seconds, repeat, encoder=args.encoder, work_nice=nice)
            r.update(repeat=repeat, work_nice=nice)
            runs.append(r)
            print(f"run {repeat} work_nice {nice:2d}: {r['steps_per_second']:,.0f} steps/s, loop lag p99 "
                  f"{r['loop_lag_p99_ms']:.1f} ms, max {r['loop_lag_max_ms']:,.0f} ms", flush=True)
    rows = ["| work_nice | steps/s, median [range] | loop lag p99 ms, median [range] | max ms, median [range] |",
            "|---:|---:|---:|---:|"]
    def cell(rs, key, digits):
        v = [r[key] for r in rs]
        return f"{statistics.median(v):,.{digits}f} [{min(v):,.{digits}f}-{max(v):,.{digits}f}]"

    for nice in (10, 0):
        rs = [r for r in runs if r["work_nice"] == nice]
        rows.append(f"| {nice} | {cell(rs, 'steps_per_second', 0)} | {cell(rs, 'loop_lag_p99_ms', 1)} | "
                    f"{cell(rs, 'loop_lag_max_ms', 0)} |")
    text = (f"Command: python bench/bench_pixels.py lag --env {args.env} --encoder {args.encoder} "
            f"--seconds {args.seconds:g} --repeats {args.repeats}\n\n" + "\n".join(rows) + "\n")
    print(text)
    out = OUT / _game(args.env)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"lag-{args.encoder}.md").write_text(text)
    (out / f"lag-{args.encoder}.json").write_text(json.dumps({"env": args.env, "runs": runs,
                                                              "machine": platform.platform()}, indent=2, default=str))
    return 0


def _game(env_id: str) -> str:
    return env_id.split("/")[-1].split("-")[0].lower()


def curve(args) -> int:
    out = OUT / _game(args.env)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.system}{'-' + args.label if args.label else ''}-seed{args.seed}.json"
    points: list[tuple] = []  # (seconds, steps, return), and asynca3c's policy entropy
    record = {"system": args.system, "label": args.label, "env": args.env, "seed": args.seed,
              "seconds": args.seconds, "curve": points}

    def save():
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")

    if args.system == "sb3-a2c":
        def on_row(row):
            games = row["games"]
            points.append((row["seconds"], row["env_steps"], float(np.mean(games)) if games else math.nan))
            save()

        record.update(run_a2c(args.env, args.seconds, args.seed, on_row, encoder=args.encoder or "nature"))
    else:
        last = {"t": -10.0}

        def on_row(row):  # asynca3c's row: the last solve_window whole games played without epsilon
            if row["seconds"] - last["t"] >= 10.0:
                last["t"] = row["seconds"]
                points.append((row["seconds"], row["env_steps"], row["eval_return_mean"], row["entropy"]))
                save()

        overrides = {name: json.loads(value) for name, _, value in (s.partition("=") for s in args.set)}
        overrides["solve_window"] = WINDOW
        if args.encoder:
            overrides["encoder"] = args.encoder
        record.update(run_asynca3c(args.env, args.seconds, args.seed, on_row, **overrides))
    save()
    print(f"{args.system} seed {args.seed}: {record['env_steps']:,} steps in {record['seconds']:.0f} s; "
          f"last point {points[-1] if points else None}")
    return 0


def plot(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = OUT / _game(args.env)
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*-seed*.json"))]
    peers: dict[str, list[list]] = {}  # each CNN's SB3 curves (one per seed run)
    for r in runs:
        if _is_sb3(r) and (curve := _points(r)):
            peers.setdefault(_encoder(r), []).append(curve)
    fig, ax = plt.subplots(figsize=(7, 4))
    lines = [f"Curves: mean return of the last {WINDOW} whole games ({args.env}); one line per run. Against SB3 "
             "A2C with the same CNN: the minute from which every later point is above its curve (interpolated, "
             "within its span; above all of them where it has several seeds), and the share of points above it.", "",
             "| run | steps | steps/s | return at 5 / 10 / 20 / 30 / 45 / 60 min | best (at min) | "
             "above SB3 A2C from (min) | points above |", "|---|---:|---:|---|---|---:|---:|"]
    for r in runs:
        c = _points(r)
        if not c:
            continue
        t, y = [p[0] for p in c], [p[2] for p in c]
        label = f"{r['system']}{' ' + r['label'] if r.get('label') else ''} seed {r['seed']}"
        ax.plot(np.array(t) / 60, y, label=label)
        at = [next((p[2] for p in c if p[0] >= m * 60 - 10), None) for m in (5, 10, 20, 30, 45, 60)]
        best = max(c, key=lambda p: p[2])
        versus = "| - | -"
        if not _is_sb3(r) and _encoder(r) in peers:
            since, share = _above(c, peers[_encoder(r)])
            versus = f"| {'never' if since is None else f'{since / 60:.1f}'} | {share:.0%}"
        lines.append(f"| {label} | {r.get('env_steps', 0):,} | {r.get('steps_per_second', 0):,.0f} | "
                     + " / ".join("-" if v is None else f"{v:.1f}" for v in at)
                     + f" | {best[2]:.1f} ({best[0] / 60:.1f}) {versus} |")
    ax.set_xlabel("minutes of training (2 cores)")
    ax.set_ylabel(f"mean return, last {WINDOW} games")
    ax.set_title(args.env)
    ax.legend(fontsize=7, loc="upper left")  # the early minutes sit at the bottom, the climb on the right
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    (out / "curves.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _points(run: dict) -> list:
    """A curve's points that have a return (the first ones wait for whole games)."""
    return [p for p in run["curve"] if p[2] is not None and not (isinstance(p[2], float) and math.isnan(p[2]))]


def _is_sb3(run: dict) -> bool:
    return run["system"].startswith("sb3-a2c")


def _encoder(run: dict) -> str:
    """The CNN a curve's run trained: asynca3c's config says ('auto' picks the Nature CNN for Atari); SB3's
    system names it ('sb3-a2c-a3c' for the A3C paper's CNN, plain 'sb3-a2c' for the Nature CNN)."""
    if _is_sb3(run):
        return run["system"].removeprefix("sb3-a2c").lstrip("-") or "nature"
    encoder = run.get("config", {}).get("encoder", "nature")
    return "nature" if encoder == "auto" else encoder


def _above(points: list, peers: list[list]) -> tuple[float | None, float]:
    """(the time from which every point of ``points`` within the span all ``peers`` cover is above each
    peer's curve, None if the last one is not; the share of those points above them)."""
    curves = [(np.array([p[0] for p in peer]), np.array([p[2] for p in peer])) for peer in peers]
    start, end = max(t[0] for t, _ in curves), min(t[-1] for t, _ in curves)
    within = [p for p in points if start <= p[0] <= end]
    if not within:
        return None, 0.0
    above = [all(p[2] > np.interp(p[0], t, y) for t, y in curves) for p in within]
    since = None
    for p, a in zip(reversed(within), reversed(above), strict=True):
        if not a:
            break
        since = p[0]
    return since, sum(above) / len(above)


def shards(args) -> int:
    """Acting shards with frames and weights through shared memory against pickled through pipes."""
    from asynca3c.runtime import shard_frames, shard_weights

    defaults = shard_frames.MIN_BYTES, shard_weights.MIN_BYTES
    runs = []
    for repeat in range(args.repeats):
        for transport in ("shm", "pipe") if repeat % 2 == 0 else ("pipe", "shm"):
            shard_frames.MIN_BYTES, shard_weights.MIN_BYTES = defaults if transport == "shm" else (1 << 62,) * 2
            cpu = time.process_time()
            r = run_asynca3c(args.env, args.seconds, repeat, encoder=args.encoder, shards=args.shards)
            r.update(repeat=repeat, transport=transport,
                     trainer_cpu_us_per_step=(time.process_time() - cpu) / max(1, r["env_steps"]) * 1e6)
            runs.append(r)
            print(f"repeat {repeat} {transport}: {r['steps_per_second']:,.0f} steps/s, trainer CPU "
                  f"{r['trainer_cpu_us_per_step']:.0f} us/step, lag p99 {r['loop_lag_p99_ms']:.1f} ms "
                  f"max {r['loop_lag_max_ms']:.0f} ms", flush=True)
    shard_frames.MIN_BYTES, shard_weights.MIN_BYTES = defaults
    lines = [f"Command: python bench/bench_pixels.py shards --env {args.env} --shards {args.shards} --encoder "
             f"{args.encoder} --seconds {args.seconds:g} --repeats {args.repeats}", "",
             "| frames and weights | steps/s, median [range] | trainer CPU per step (us) | loop lag p99 (ms) | "
             "loop lag max (ms) |", "|---|---:|---:|---:|---:|"]
    for transport in ("shm", "pipe"):
        rs = [r for r in runs if r["transport"] == transport]
        sps = [r["steps_per_second"] for r in rs]

        def med(key, rs=rs):
            return statistics.median(r[key] for r in rs)

        lines.append(f"| {transport} | {statistics.median(sps):,.0f} [{min(sps):,.0f}, {max(sps):,.0f}] | "
                     f"{med('trainer_cpu_us_per_step'):.0f} | {med('loop_lag_p99_ms'):.1f} | "
                     f"{med('loop_lag_max_ms'):.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = OUT / _game(args.env)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"shards-{args.shards}-{args.encoder}.md").write_text(text)
    (out / f"shards-{args.shards}-{args.encoder}.json").write_text(json.dumps(runs, indent=2, default=str))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("throughput", "curve", "plot", "lag", "shards"):
        s = sub.add_parser(name)
        s.add_argument("--env", default="ALE/Pong-v5")
        if name in ("throughput", "lag", "shards"):
            s.add_argument("--seconds", type=float, default=60.0)
            s.add_argument("--repeats", type=int, default=2)
        if name in ("lag", "shards"):
            s.add_argument("--encoder", choices=["nature", "a3c"], default="nature")
        if name == "shards":
            s.add_argument("--shards", type=int, default=2)
        if name == "curve":
            s.add_argument("--system", choices=["asynca3c", "sb3-a2c"], required=True)
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--label", default="", help="names the result file (settings tried beside the table's)")
            s.add_argument("--seconds", type=float, default=1800.0)
            s.add_argument("--encoder", choices=["nature", "a3c"], default=None,
                           help="the CNN (default: asynca3c's table's, SB3's NatureCNN)")
            s.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    args = p.parse_args(argv)
    return {"throughput": throughput, "curve": curve, "plot": plot, "lag": lag, "shards": shards}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
