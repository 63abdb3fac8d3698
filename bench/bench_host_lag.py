"""Host-loop responsiveness: a heartbeat in the host's loop while a Trainer trains in it.

The heartbeat asks to wake every ``--interval`` seconds and records how late it
woke. Figures are taken while training runs at full speed (between ``start``
returning and ``stop`` being called); the trainer's own measurement
(``loop_lag_p99_ms``/``loop_lag_max_ms`` in its summary) is shown beside it.
Targets: p99 <= 5 ms, worst <= 50 ms. Runs on asyncio and on uvloop.

    python bench/bench_host_lag.py [--seconds 10] [--interval 0.001]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import uvloop

from asynca3c import Config, Trainer

TARGET_P99_MS, TARGET_MAX_MS = 5.0, 50.0


async def measure(seconds: float, interval: float) -> dict:
    lags: list[float] = []
    recording = False

    async def heartbeat():
        while True:
            due = time.perf_counter() + interval
            await asyncio.sleep(interval)
            if recording:
                lags.append((time.perf_counter() - due) * 1000)

    beat = asyncio.create_task(heartbeat())
    async with Trainer(Config(seconds=0)) as trainer:
        recording = True
        await asyncio.sleep(seconds)
        recording = False
        result = await trainer.stop()
    beat.cancel()
    return {"p50": statistics.median(lags), "p99": statistics.quantiles(lags, n=100)[98], "max": max(lags),
            "beats": len(lags), "steps_per_second": result.steps_per_second,
            "trainer_p99": result.loop_lag_p99_ms, "trainer_max": result.loop_lag_max_ms}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=0.001)
    args = p.parse_args(argv)
    print(f"default config (CartPole-v1), {args.seconds:g} s of training, heartbeat every {args.interval * 1000:g} ms")
    print("| loop | heartbeat p50 (ms) | p99 (ms) | max (ms) | trainer's own p99 / max (ms) | steps/s | targets |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for name, factory in (("asyncio", asyncio.new_event_loop), ("uvloop", uvloop.new_event_loop)):
        with asyncio.Runner(loop_factory=factory) as runner:
            m = runner.run(measure(args.seconds, args.interval))
        ok = m["p99"] <= TARGET_P99_MS and m["max"] <= TARGET_MAX_MS
        print(f"| {name} | {m['p50']:.2f} | {m['p99']:.2f} | {m['max']:.1f} | {m['trainer_p99']:.2f} / "
              f"{m['trainer_max']:.1f} | {m['steps_per_second']:,.0f} | {'hold' if ok else 'MISSED'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
