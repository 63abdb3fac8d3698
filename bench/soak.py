"""Soak: a long run that is hurt on purpose, and what it leaves behind.

A worker process trains on async CartPole environments that inject faults at a
set rate (a step that raises, one that hangs past ``env_step_timeout``, a NaN
observation, a wrongly shaped one). Every ``--kill-every`` seconds the learner
process is killed with SIGKILL; every ``--term-every`` seconds the worker gets
SIGTERM and is started again with ``resume_from`` its run directory. Every few
seconds the driver samples the resident memory and open file descriptors of the
worker and of its learner, the entries in /dev/shm, and the run's progress.

Reported: RSS slope per process life (after a warm-up), file descriptors and
/dev/shm entries at the start and end, faults injected against faults counted,
learner restarts, and the judged return early and late.

    python bench/soak.py [--minutes 30] [--kill-every 300] [--term-every 600] [--out bench/results/soak]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FAULTS = ("raise", "hang", "nan", "shape")


# --- the worker: trains with faulty envs until its budget is spent or SIGTERM ----------------------------

class FaultyCartPole:
    """LatencyCartPole whose steps go wrong with probability ``rate`` (one of FAULTS, in turn)."""

    injected = dict.fromkeys(FAULTS, 0)

    def __init__(self, rate: float, latency: float):
        from latency_env import LatencyCartPole

        self.env = LatencyCartPole(latency=latency)
        self.observation_space, self.action_space, self.spec = (self.env.observation_space,
                                                                self.env.action_space, self.env.spec)
        self.rate, self.rng = rate, random.Random()

    async def reset(self, *, seed=None, options=None):
        return await self.env.reset(seed=seed)

    async def step(self, action):
        out = await self.env.step(action)
        if self.rng.random() >= self.rate:
            return out
        kind = FAULTS[sum(self.injected.values()) % len(FAULTS)]
        self.injected[kind] += 1
        if kind == "raise":
            raise ConnectionResetError("injected: connection reset by the simulator")
        if kind == "hang":
            await asyncio.Event().wait()
        obs, reward, terminated, truncated, info = out
        bad = np.full(4, np.nan) if kind == "nan" else np.zeros(5)
        return bad, reward, terminated, truncated, info


async def worker(run_dir: Path, resume: bool, seconds: float, rate: float) -> None:
    from asynca3c import Config, Trainer

    cfg = Config(env="FaultyCartPole", seconds=seconds, agents=2, envs_per_agent=32, batch_envs=64,
                 env_step_timeout=1.0, max_env_faults_per_minute=120, save_every=60.0, final_eval_episodes=20,
                 log_interval=5.0)
    trainer = Trainer(cfg, run_dir=run_dir, env_factory=lambda: FaultyCartPole(rate, 0.0005),
                      resume_from=run_dir if resume else None, overwrite=not resume)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, trainer.request_stop, "terminated")
    injected_file = run_dir / "injected.json"

    async def report_injected():
        while True:
            injected_file.write_text(json.dumps(FaultyCartPole.injected))
            await asyncio.sleep(2.0)

    reporter = asyncio.create_task(report_injected())
    try:
        result = await trainer.run()
    finally:
        reporter.cancel()
        injected_file.write_text(json.dumps(FaultyCartPole.injected))
    (run_dir / "last_result.json").write_text(json.dumps(result.to_dict()))


# --- the driver ----------------------------------------------------------------------------------------

def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def learner_pid(parent: int) -> int | None:
    """The worker's child running the learner (its only Python child)."""
    try:
        for tid in os.listdir(f"/proc/{parent}/task"):
            for child in Path(f"/proc/{parent}/task/{tid}/children").read_text().split():
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"learner_worker" in cmd:
                    return int(child)
    except OSError:
        return None
    return None


def shm_entries() -> int:
    try:
        return len(os.listdir("/dev/shm"))
    except OSError:
        return 0


def slope_mb_per_hour(samples: list[tuple[float, float]], warmup: float) -> float | None:
    """Least-squares slope of RSS over time after ``warmup`` seconds of a process's life."""
    if not samples:
        return None
    t0 = samples[0][0]
    pts = [(t, v) for t, v in samples if t - t0 >= warmup]
    if len(pts) < 3:
        return None
    t, v = np.array(pts).T
    return float(np.polyfit(t, v, 1)[0] * 3600)


def progress_rows(run_dir: Path) -> list[dict]:
    import csv

    file = run_dir / "progress.csv"
    if not file.exists():
        return []
    with file.open() as f:
        return list(csv.DictReader(f))


def drive(args) -> dict:
    run_dir = Path(args.out) / "run"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(run_dir), "--budget", str(budget),
           "--rate", str(args.rate)]
    t_start = time.monotonic()
    lives: dict[str, list[tuple[float, float]]] = {}  # "worker 1" / "learner 3" -> [(t, rss)]
    fds: dict[str, list[int]] = {}
    shm = [shm_entries()]
    injected_total = dict.fromkeys(FAULTS, 0)
    kills = terms = 0
    exits = []
    resume = False
    worker_n = learner_n = 0
    seen_learners: dict[int, str] = {}
    while True:
        worker_n += 1
        wname = f"worker {worker_n}"
        log = Path(args.out) / f"worker-{worker_n}.log"
        with log.open("w") as log_file:  # a file, not a pipe: a full pipe would stall the worker
            proc = subprocess.Popen([*cmd, *(["--resume"] if resume else [])], stdout=log_file,
                                    stderr=subprocess.STDOUT)
        life_start = time.monotonic()
        next_kill = life_start + args.kill_every
        term_at = life_start + args.term_every
        termed = False
        while proc.poll() is None:
            time.sleep(args.sample_every)
            now = time.monotonic()
            t = now - t_start
            if (r := rss_mb(proc.pid)) is not None:
                lives.setdefault(wname, []).append((t, r))
                fds.setdefault(wname, []).append(fd_count(proc.pid) or 0)
            lp = learner_pid(proc.pid)
            if lp is not None:
                if lp not in seen_learners:
                    learner_n += 1
                    seen_learners[lp] = f"learner {learner_n}"
                lname = seen_learners[lp]
                if (r := rss_mb(lp)) is not None:
                    lives.setdefault(lname, []).append((t, r))
                    fds.setdefault(lname, []).append(fd_count(lp) or 0)
            shm.append(shm_entries())
            if lp is not None and now >= next_kill and not termed:
                os.kill(lp, signal.SIGKILL)
                kills += 1
                next_kill = now + args.kill_every
                print(f"[{t:7.0f}s] killed the learner ({lname}, pid {lp})", flush=True)
            if now >= term_at and not termed and now - t_start < budget - 30:
                proc.send_signal(signal.SIGTERM)
                termed, terms = True, terms + 1
                print(f"[{t:7.0f}s] SIGTERM to {wname}; it will be resumed", flush=True)
        exits.append({"worker": wname, "returncode": proc.returncode,
                      "log_tail": log.read_text().strip().splitlines()[-3:]})
        injected = json.loads((run_dir / "injected.json").read_text()) if (run_dir / "injected.json").exists() else {}
        for k, v in injected.items():
            injected_total[k] += v
        last = json.loads((run_dir / "last_result.json").read_text()) if (run_dir / "last_result.json").exists() \
            else {}
        print(f"[{time.monotonic() - t_start:7.0f}s] {wname} exited {proc.returncode} ({last.get('stop_reason')}); "
              f"faults counted so far {last.get('env_faults')}, learner restarts {last.get('learner_restarts')}",
              flush=True)
        if proc.returncode != 0 or not termed:
            break
        resume = True
    rows = progress_rows(run_dir)
    last = json.loads((run_dir / "last_result.json").read_text()) if (run_dir / "last_result.json").exists() else {}

    def window_mean(rows_, first: bool) -> float | None:
        vals = [float(r["eval_return_mean"]) for r in rows_ if r["eval_return_mean"] not in ("", "nan")]
        k = max(1, len(vals) // 10)
        part = vals[:k] if first else vals[-k:]
        return float(np.mean(part)) if part else None

    return {
        "minutes": args.minutes, "wall_seconds": time.monotonic() - t_start, "fault_rate_per_step": args.rate,
        "learner_kills": kills, "sigterm_resumes": terms, "exits": exits,
        "rss_slope_mb_per_hour": {name: slope_mb_per_hour(s, args.warmup) for name, s in lives.items()},
        "rss_slope_second_half_mb_per_hour": {name: slope_mb_per_hour(s, (s[-1][0] - s[0][0]) / 2)
                                              for name, s in lives.items()},
        "rss_mb_first_last": {name: (s[0][1], s[-1][1]) for name, s in lives.items()},
        "rss_samples": {name: [(round(t, 1), round(v, 2)) for t, v in s] for name, s in lives.items()},
        "fds_first_last": {name: (v[0], v[-1]) for name, v in fds.items()},
        "dev_shm_first_last": (shm[0], shm[-1]),
        "faults_injected": injected_total, "faults_injected_total": sum(injected_total.values()),
        "env_faults_counted": last.get("env_faults"), "learner_restarts_counted": last.get("learner_restarts"),
        "env_steps": last.get("env_steps"), "updates": last.get("updates"),
        "judged_return_first_tenth": window_mean(rows, True), "judged_return_last_tenth": window_mean(rows, False),
        "final_eval_mean_return": last.get("eval_mean_return"), "final_eval_episodes": last.get("eval_episodes"),
        "stop_reason": last.get("stop_reason"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--kill-every", type=float, default=300.0, help="seconds between learner kills")
    p.add_argument("--term-every", type=float, default=600.0, help="seconds between SIGTERM/resume cycles")
    p.add_argument("--rate", type=float, default=2e-5, help="fault probability per env step")
    p.add_argument("--sample-every", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=120.0, help="seconds of each process life left out of its slope")
    p.add_argument("--out", default=str(HERE / "results" / "soak"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        import uvloop

        uvloop.run(worker(Path(args.worker), args.resume, args.budget, args.rate))
        return 0
    report = drive(args)
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = all(e["returncode"] == 0 for e in report["exits"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
