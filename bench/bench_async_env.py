"""Throughput with asynchronous environments: each step awaits a fixed latency.

An environment behind a network call spends its step time waiting; asynca3c
drives each such environment with its own coroutine, so while one waits the
others act, and throughput should rise with the number of environments
("agents") toward the ideal agents / latency. Beside it, the seed's threaded
design (bench/seed_threaded.py) with one thread per agent and the same latency
(a sleep per step). Systems run one after another. The ceiling column is the
same number of bare coroutines doing nothing but the sleep, on the same loop:
what one event-loop thread can reach before any training work.

    python bench/bench_async_env.py [--latency 0.002] [--agents 1,4,16,64,256] [--seconds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
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


def run_asynca3c(agents: int, latency: float, seconds: float) -> dict:
    cfg = Config(env="LatencyCartPole", agents=1, envs_per_agent=agents, eval_envs=0, final_eval_episodes=0,
                 seconds=seconds)

    async def main():
        return await Trainer(cfg, env_factory=lambda: LatencyCartPole(latency=latency)).run()

    r = run_on_uvloop(main())
    return {"steps_per_second": r.steps_per_second, "updates": r.updates,
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
    p.add_argument("--no-seed", action="store_true", help="skip the seed's threaded design")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    counts = [int(a) for a in args.agents.split(",")]
    print(f"async env: CartPole dynamics behind {args.latency * 1000:g} ms per step; {args.seconds:g} s per run")
    print("| agents | ideal steps/s | bare-sleep ceiling | of ideal | asynca3c steps/s | of ideal | "
          "asynca3c loop lag p99 (ms) | seed threaded steps/s | of ideal | asynca3c / seed |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for n in counts:
        ideal = n / args.latency
        bare = run_bare_sleepers(n, args.latency, min(args.seconds, 2.0))
        ours = run_asynca3c(n, args.latency, args.seconds)
        seed = None
        if not args.no_seed:
            s = seed_threaded.run("CartPole-v1", args.seconds, latency=args.latency, agents=n, eval_agents=0)
            seed = s["steps_per_second"]
        rows.append({"agents": n, "ideal": ideal, "bare_sleep_per_second": bare, "asynca3c": ours,
                     "seed_threaded_steps_per_second": seed})
        seed_cells = (f"{seed:,.0f} | {seed / ideal:.0%} | {ours['steps_per_second'] / seed:.1f}x"
                      if seed else "- | - | -")
        sps = ours["steps_per_second"]
        print(f"| {n} | {ideal:,.0f} | {bare:,.0f} | {bare / ideal:.0%} | {sps:,.0f} | {sps / ideal:.0%} | "
              f"{ours['loop_lag_p99_ms']:.1f} | {seed_cells} |", flush=True)
    last = rows[-1]
    if last["agents"] == 256:
        ratio = last["asynca3c"]["steps_per_second"] / last["ideal"]
        print(f"\ntarget: >= {TARGET_RATIO_AT_256:.0%} of ideal with 256 agents: "
              f"{'holds' if ratio >= TARGET_RATIO_AT_256 else 'MISSED'} ({ratio:.0%})")
    if args.json:
        Path(args.json).write_text(json.dumps({"latency": args.latency, "seconds": args.seconds,
                                               "machine": platform.platform(), "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
