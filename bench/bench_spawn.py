"""How long starting a worker process stalls the loop that starts it, with torch loaded and a big process.

Starting the learner or a shard is ``python -m ...`` with pipes. ``exec`` is
``asyncio.create_subprocess_exec`` (what asynca3c did before: under uvloop,
libuv forks the whole parent on the loop's thread), ``thread`` is asynca3c's
``wire.spawn_worker`` (``subprocess.Popen`` from a thread, which uses vfork).
A 1 ms heartbeat on the loop records the worst lateness while each start is
awaited; the child exits at once. ``--resident-mb`` of torch tensor makes the
parent as big as a trainer with a replay of frames or a large network.

    python bench/bench_spawn.py [--repeats 5] [--resident-mb 400]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import torch
import uvloop

from asynca3c.runtime.wire import spawn_worker


async def _beat(out: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        due = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        out.append((time.perf_counter() - due) * 1000)


async def one_start(how: str) -> float:
    """The worst heartbeat lateness (ms) while one worker is started and waited for."""
    lags: list[float] = []
    stop = asyncio.Event()
    beat = asyncio.create_task(_beat(lags, stop))
    await asyncio.sleep(0.1)
    lags.clear()
    if how == "exec":
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass", stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, start_new_session=True)
        await proc.communicate()
    else:
        worker = await spawn_worker("this")  # any module: 'python -m this' prints and exits
        while await worker.stdout.read(1 << 16):
            pass
        await worker.wait()
        worker.close_pipes()
    await asyncio.sleep(0.05)
    stop.set()
    await beat
    return max(lags)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--resident-mb", type=int, default=400)
    args = p.parse_args(argv)
    resident = torch.ones(args.resident_mb * (1 << 20) // 4)  # touched: resident, not just reserved
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):
        for loop in ("uvloop", "asyncio"):
            for how in ("exec", "thread") if r % 2 == 0 else ("thread", "exec"):
                factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
                with asyncio.Runner(loop_factory=factory) as runner:
                    results.setdefault((loop, how), []).append(runner.run(one_start(how)))
    print(f"Command: python bench/bench_spawn.py --repeats {args.repeats} --resident-mb {args.resident_mb} "
          f"(torch loaded, {resident.numel() * 4 >> 20} MB resident)\n")
    print("| loop | start | worst loop lag while starting, median [range] (ms) |\n|---|---|---:|")
    for (loop, how), v in results.items():
        print(f"| {loop} | {how} | {statistics.median(v):.1f} [{min(v):.1f}, {max(v):.1f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
