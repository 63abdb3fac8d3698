"""Throughput with asynchronous environments: each step awaits a fixed latency.

An environment behind a network call spends its step time waiting; asynca3c
drives each such environment with its own coroutine, so while one waits the
others act, and throughput should rise with the number of environments
("agents") toward the ideal agents / latency. Beside it, the seed's threaded
design (bench/seed_threaded.py) with one thread per agent and the same latency
(a sleep per step). Systems run one after another. The ceiling column is the
same number of bare coroutines doing nothing but the sleep, on the same loop:
what one event-loop thread can reach before any training work.

``--shards 0,2`` runs asynca3c once per shard count (0: every env on the
trainer's loop; N: the envs split over N shard processes, each with its own
loop), and reports the trainer process's CPU time per env step: the loop
work per step that shards take off the trainer's loop.

    python bench/bench_async_env.py [--latency 0.002] [--agents 1,4,16,64,256] [--seconds 5] [--shards 0]
                                    [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seed_threaded  # noqa: E402
from latency_env import LatencyCartPole  # noqa: E402

from asynca3c import Config, Trainer  # noqa: E402
from asynca3c.runtime.trainer import run_on_uvloop  # noqa: E402

TARGET_RATIO_AT_256 = 0.70


def run_asynca3c(agents: int, latency: float, seconds: float, shards: int = 0) -> dict:
    """One run; ``trainer_cpu_us_per_step``: this process's CPU time (the trainer's loop, its threads, the
    start and the end included) per env step."""
    groups = max(1, min(shards, agents))
    cfg = Config(env="LatencyCartPole", agents=groups, envs_per_agent=agents // groups, eval_envs=0,
                 final_eval_episodes=0, seconds=seconds, shards=min(shards, agents))
    factory = functools.partial(LatencyCartPole, latency=latency)  # importable: shard processes rebuild it

    async def main():
        return await Trainer(cfg, env_factory=factory).run()

    cpu = time.process_time()
    r = run_on_uvloop(main())
    cpu = time.process_time() - cpu
    return {"steps_per_second": r.steps_per_second, "updates": r.updates, "shards": cfg.shards,
            "env_steps": r.env_steps, "trainer_cpu_us_per_step": cpu / max(1, r.env_steps) * 1e6,
            "loop_lag_p99_ms": r.loop_lag_p99_ms, "loop_lag_max_ms": r.loop_lag_max_ms}


def run_bare_sleepers(agents: int, latency: float, seconds: float) -> float:
    """Wake-ups per second of ``agents`` coroutines that only ``await asyncio.sleep(latency)``."""
    async def main():
        stop, wakeups = False, 0

        async def sleeper():
            nonlocal wakeups
            while not stop:
                await asyncio.sleep(latency)
                wakeups += 1

        tasks = [asyncio.create_task(sleeper()) for _ in range(agents)]
        await asyncio.sleep(0.2)  # every sleeper started
        wakeups, start = 0, time.perf_counter()
        await asyncio.sleep(seconds)
        rate = wakeups / (time.perf_counter() - start)
        stop = True
        await asyncio.gather(*tasks)
        return rate

    return run_on_uvloop(main())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.002, help="seconds each step awaits (default 0.002)")
    p.add_argument("--agents", default="1,4,16,64,256", help="comma-separated agent counts")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--shards", default="0", help="comma-separated shard counts for asynca3c (default 0)")
    p.add_argument("--no-seed", action="store_true", help="skip the seed's threaded design")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    counts = [int(a) for a in args.agents.split(",")]
    shard_counts = [int(s) for s in args.shards.split(",")]
    print(f"async env: CartPole dynamics behind {args.latency * 1000:g} ms per step; {args.seconds:g} s per run")
    print("| agents | ideal steps/s | bare-sleep ceiling | of ideal | shards | asynca3c steps/s | of ideal | "
          "trainer CPU per step (us) | asynca3c loop lag p99 (ms) | seed threaded steps/s | of ideal | "
          "asynca3c / seed |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for n in counts:
        ideal = n / args.latency
        bare = run_bare_sleepers(n, args.latency, min(args.seconds, 2.0))
        runs = [run_asynca3c(n, args.latency, args.seconds, k) for k in shard_counts]
        seed = None
        if not args.no_seed:
            s = seed_threaded.run("CartPole-v1", args.seconds, latency=args.latency, agents=n, eval_agents=0)
            seed = s["steps_per_second"]
        rows.append({"agents": n, "ideal": ideal, "bare_sleep_per_second": bare, "asynca3c": runs[0],
                     "asynca3c_by_shards": runs, "seed_threaded_steps_per_second": seed})
        for ours in runs:
            sps = ours["steps_per_second"]
            seed_cells = (f"{seed:,.0f} | {seed / ideal:.0%} | {sps / seed:.1f}x" if seed else "- | - | -")
            print(f"| {n} | {ideal:,.0f} | {bare:,.0f} | {bare / ideal:.0%} | {ours['shards']} | {sps:,.0f} | "
                  f"{sps / ideal:.0%} | {ours['trainer_cpu_us_per_step']:.1f} | {ours['loop_lag_p99_ms']:.1f} | "
                  f"{seed_cells} |", flush=True)
    last = rows[-1]
    if last["agents"] == 256:
        for ours in last["asynca3c_by_shards"]:
            ratio = ours["steps_per_second"] / last["ideal"]
            print(f"\ntarget: >= {TARGET_RATIO_AT_256:.0%} of ideal with 256 agents, {ours['shards']} shards: "
                  f"{'holds' if ratio >= TARGET_RATIO_AT_256 else 'MISSED'} ({ratio:.0%})")
    if args.json:
        Path(args.json).write_text(json.dumps({"latency": args.latency, "seconds": args.seconds,
                                               "machine": platform.platform(), "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
