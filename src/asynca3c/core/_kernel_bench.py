"""Microbenchmark of the n-step return computation, run by ``asynca3c bench returns``.

Why it exists: the n-step returns are computed for every transition an agent
collects, so their cost per transition bounds how fast the actors can run. The
seed computed them in plain Python, either with the ``get_sample`` loop (the
reference twin in :mod:`asynca3c.core.returns`) or with the O(1) incremental update
``R = (R + r*gamma**n) / gamma``, which is fast but loses all precision on long
episodes (each step divides the rounding error by gamma). The compiled
``NStepKernel`` replaces both; this script measures, in one run and on the same
data, what that buys, and reports whether the performance targets hold:

* kernel fed a batch of environments per ``push`` call: <= 20 ns/transition;
* the same, at least 100x faster than the plain-Python reference twin;
* kernel fed one transition per ``push_one`` call: <= 300 ns/transition.

Systems measured (nanoseconds per transition):

``kernel_batch``  ``NStepKernel.push``, one call per step for all environments;
``kernel_one``    ``NStepKernel.push_one``, one call per transition;
``numpy_batch``   a numpy implementation streaming over the batch: a (n, E)
                  ring of rewards and one dot product with the gamma powers
                  per step, episode ends flushed per environment;
``seed_python``   the seed's incremental update with a deque, plain Python;
``twin_python``   ``ReferenceNStepBuffer.push_one``, plain Python.

The data are pre-generated random rewards in [-1, 1) with about 1% episode ends
(80% terminated, 20% truncated); an environment's next step starts its next
episode (no masked autoreset steps). Per-step rows are sliced into Python lists
before timing, so slicing is not measured; the per-transition systems are timed
with the Python loop that makes the calls, as an agent would run them. Every
measurement is repeated ``--repeats`` times, the systems interleaved in a
rotating order, and the median and best are reported. Before timing, all five
systems are run on a prefix of the data and must emit the same samples.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from asynca3c.core.returns import NStepKernel, ReferenceNStepBuffer

__all__ = ["SYSTEMS", "NumpyNStep", "SeedIncremental", "format_table", "format_targets", "make_data",
           "run_benchmark"]

TARGET_BATCH_NS = 20.0
TARGET_SPEEDUP = 100.0
TARGET_ONE_NS = 300.0

# key -> label; the order is the order of the table.
SYSTEMS: dict[str, str] = {
    "kernel_batch": "kernel push ({envs} envs/call)",
    "kernel_one": "kernel push_one (1 transition/call)",
    "numpy_batch": "numpy ring + dot ({envs} envs/call)",
    "seed_python": "seed incremental update (Python)",
    "twin_python": "reference twin ReferenceNStepBuffer (Python)",
}


# --------------------------------------------------------------------------- baselines
class SeedIncremental:
    """The seed's O(1) incremental update, in plain Python as the seed wrote it.

    Per environment a deque of ``(step, reward)`` and a running ``R`` updated as
    ``R = (R + r * gamma**n) / gamma``; a full window emits ``R`` and subtracts
    its oldest reward, an episode end flushes the window with
    ``R = (R - r_oldest) / gamma``. One correction to the seed: while the window
    is shorter than n, R carries an extra factor gamma**(n-k), which is divided
    out before a flush (the seed emitted it as is). Needs gamma > 0. Emits the
    same ``(env, start, boot, return, discount)`` tuples as the twin. Its error
    grows like gamma**-t within an episode: it is here to be timed.
    """

    def __init__(self, num_envs: int, n: int, gamma: float):
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"the seed's update divides by gamma: gamma must be in (0, 1], got {gamma!r}")
        self.n, self.gamma, self.gamma_n = n, float(gamma), float(gamma) ** n
        self.memory: list[deque[tuple[int, float]]] = [deque() for _ in range(num_envs)]
        self.R = [0.0] * num_envs
        self.steps = [0] * num_envs

    def push_one(self, env, reward, terminated=False, truncated=False):
        gamma = self.gamma
        memory = self.memory[env]
        step = self.steps[env]
        self.steps[env] = step + 1
        memory.append((step, reward))
        R = (self.R[env] + reward * self.gamma_n) / gamma
        samples = []
        if terminated or truncated:
            k = len(memory)
            if k < self.n:
                R /= gamma ** (self.n - k)
            while memory:
                k = len(memory)
                start, oldest = memory.popleft()
                samples.append((env, start, step + 1, R, 0.0 if terminated else gamma**k))
                R = (R - oldest) / gamma
            R = 0.0
        elif len(memory) >= self.n:
            start, oldest = memory.popleft()
            samples.append((env, start, step + 1, R, self.gamma_n))
            R -= oldest
        self.R[env] = R
        return samples


class NumpyNStep:
    """n-step returns streamed over a batch of environments with numpy.

    All environments step together (no masks). The last n rewards sit in a
    (n, E) ring; every step one dot product of the gamma powers (rotated to the
    ring position) with the ring gives the return of every full window. An
    environment whose episode ends is flushed on its own with a triangular
    matrix of gamma powers. With ``collect=True`` the emitted samples are kept
    in ``samples`` as ``(env, start, boot, return, discount)`` tuples.
    """

    def __init__(self, num_envs: int, n: int, gamma: float, collect: bool = False):
        self.num_envs, self.n, self.gamma = num_envs, n, float(gamma)
        self.ring = np.zeros((n, num_envs))
        self.count = np.zeros(num_envs, dtype=np.int64)
        self.t = 0
        self.powers = self.gamma ** np.arange(n + 1, dtype=np.float64)
        # weights[p][(p + 1 + i) % n] = gamma**i: the oldest reward of a full
        # window whose newest reward is at ring row p sits at row p + 1.
        self.weights = np.stack([np.roll(self.powers[:n], p + 1) for p in range(n)])
        j = np.arange(n)
        diff = j[None, :] - j[:, None]
        self.tri = np.where(diff >= 0, self.gamma ** np.maximum(diff, 0), 0.0)
        self.samples: list[tuple[int, int, int, float, float]] | None = [] if collect else None

    def push(self, rewards, terminated, truncated) -> int:
        n, t = self.n, self.t
        p = t % n
        ring, count = self.ring, self.count
        ring[p] = rewards
        count += 1
        emitted = 0
        done = terminated | truncated
        if done.any():
            for e in np.flatnonzero(done).tolist():
                k = int(count[e])
                rets = self.tri[:k, :k] @ ring[np.arange(p - k + 1, p + 1) % n, e]
                count[e] = 0
                emitted += k
                if self.samples is not None:
                    for j in range(k):
                        disc = 0.0 if terminated[e] else float(self.powers[k - j])
                        self.samples.append((e, t - k + 1 + j, t + 1, float(rets[j]), disc))
        full = np.flatnonzero(count == n)
        if full.size:
            rets = (self.weights[p] @ ring)[full]
            count[full] = n - 1
            emitted += full.size
            if self.samples is not None:
                for e, ret in zip(full.tolist(), rets.tolist()):
                    self.samples.append((e, t - n + 1, t + 1, ret, float(self.powers[n])))
        self.t = t + 1
        return emitted


# --------------------------------------------------------------------------- data and runners
def make_data(envs: int, steps: int, seed: int = 0, end_prob: float = 0.01):
    """Random rewards (T, E) in [-1, 1) and episode-end flags, T = ceil(steps / envs)."""
    rng = np.random.default_rng(seed)
    T = max(1, -(-steps // envs))
    rewards = rng.uniform(-1.0, 1.0, size=(T, envs))
    ends = rng.random((T, envs)) < end_prob
    terminated = ends & (rng.random((T, envs)) < 0.8)
    truncated = ends & ~terminated
    return rewards, terminated, truncated


def _rows(rewards, terminated, truncated):
    """Per-step row views (contiguous, so the kernel takes them without a copy)."""
    return list(zip(rewards, terminated, truncated))


def _py_rows(rewards, terminated, truncated):
    """Per-step rows as Python lists of floats and bools."""
    return [(r.tolist(), te.tolist(), tr.tolist()) for r, te, tr in zip(rewards, terminated, truncated)]


def _run_batch(push, rows) -> int:
    total = 0
    for r, te, tr in rows:
        total += push(r, te, tr)
    return total


def _run_one_count(push_one, py_rows, num_envs) -> int:
    envs = range(num_envs)
    total = 0
    for r_row, te_row, tr_row in py_rows:
        for e, r, te, tr in zip(envs, r_row, te_row, tr_row):
            total += push_one(e, r, te, tr)
    return total


def _run_one_list(push_one, py_rows, num_envs) -> int:
    envs = range(num_envs)
    total = 0
    for r_row, te_row, tr_row in py_rows:
        for e, r, te, tr in zip(envs, r_row, te_row, tr_row):
            total += len(push_one(e, r, te, tr))
    return total


def _setups(envs: int, n: int, gamma: float, rows, py_rows) -> dict[str, Callable[[], Callable[[], int]]]:
    """Per system, a function building fresh state and returning the timed run."""

    def kernel_batch():
        push = NStepKernel(envs, n, gamma).push
        return lambda: _run_batch(push, rows)

    def kernel_one():
        push_one = NStepKernel(envs, n, gamma).push_one
        return lambda: _run_one_count(push_one, py_rows, envs)

    def numpy_batch():
        push = NumpyNStep(envs, n, gamma).push
        return lambda: _run_batch(push, rows)

    def seed_python():
        push_one = SeedIncremental(envs, n, gamma).push_one
        return lambda: _run_one_list(push_one, py_rows, envs)

    def twin_python():
        push_one = ReferenceNStepBuffer(envs, n, gamma).push_one
        return lambda: _run_one_list(push_one, py_rows, envs)

    return {
        "kernel_batch": kernel_batch,
        "kernel_one": kernel_one,
        "numpy_batch": numpy_batch,
        "seed_python": seed_python,
        "twin_python": twin_python,
    }


def _timed(run: Callable[[], int]) -> tuple[int, int]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        emitted = run()
        t1 = time.perf_counter_ns()
    finally:
        if was_enabled:
            gc.enable()
    return t1 - t0, emitted


# --------------------------------------------------------------------------- agreement check
def collect_samples(envs: int, n: int, gamma: float, rewards, terminated, truncated) -> dict[str, dict]:
    """Run every system on the data; per system {(env, start): (boot, return, discount)}."""
    out: dict[str, dict] = {}
    rows = _rows(rewards, terminated, truncated)
    py_rows = _py_rows(rewards, terminated, truncated)

    k = NStepKernel(envs, n, gamma)
    got: dict = {}
    for r_row, te_row, tr_row in rows:
        _take(k, k.push(r_row, te_row, tr_row), got)
    out["kernel_batch"] = got

    k = NStepKernel(envs, n, gamma)
    got = {}
    for r_row, te_row, tr_row in py_rows:
        for e in range(envs):
            _take(k, k.push_one(e, r_row[e], te_row[e], tr_row[e]), got)
    out["kernel_one"] = got

    nb = NumpyNStep(envs, n, gamma, collect=True)
    _run_batch(nb.push, rows)
    assert nb.samples is not None
    out["numpy_batch"] = {(s[0], s[1]): s[2:] for s in nb.samples}

    for key, cls in (("seed_python", SeedIncremental), ("twin_python", ReferenceNStepBuffer)):
        sys_ = cls(envs, n, gamma)
        got = {}
        for r_row, te_row, tr_row in py_rows:
            for e in range(envs):
                for s in sys_.push_one(e, r_row[e], te_row[e], tr_row[e]):
                    got[(s[0], s[1])] = s[2:]
        out[key] = got
    return out


def _take(kernel, count: int, got: dict) -> None:
    for i in range(count):
        got[(int(kernel.env[i]), int(kernel.start[i]))] = (
            int(kernel.boot[i]),
            float(kernel.returns[i]),
            float(kernel.discounts[i]),
        )


def check_agreement(envs, n, gamma, rewards, terminated, truncated, rtol=1e-9, atol=1e-9) -> tuple[bool, str]:
    """All systems emit the same samples (keys, boot, return, discount) as the twin."""
    samples = collect_samples(envs, n, gamma, rewards, terminated, truncated)
    ref = samples["twin_python"]
    worst = 0.0
    for key, got in samples.items():
        if got.keys() != ref.keys():
            return False, f"{key} emits different samples than the twin ({len(got)} vs {len(ref)})"
        for sk, (boot, ret, disc) in got.items():
            rboot, rret, rdisc = ref[sk]
            err = max(abs(ret - rret), abs(disc - rdisc))
            if boot != rboot or err > atol + rtol * max(abs(rret), abs(rdisc)):
                return False, f"{key} differs from the twin at env/start {sk}: {(boot, ret, disc)} vs {ref[sk]}"
            worst = max(worst, err)
    return True, f"all {len(samples)} systems emit the same {len(ref)} samples (max abs diff {worst:.1e})"


# --------------------------------------------------------------------------- benchmark
def run_benchmark(envs: int = 64, n: int = 8, gamma: float = 0.99, steps: int = 1_000_000,
                  repeats: int = 5, seed: int = 0, check_steps: int = 20_000,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every system; returns the figures as a JSON-ready dict."""
    rewards, terminated, truncated = make_data(envs, steps, seed)
    T = rewards.shape[0]
    transitions = T * envs
    ct = max(1, min(T, -(-check_steps // envs)))
    ok, agreement = check_agreement(envs, n, gamma, rewards[:ct], terminated[:ct], truncated[:ct])
    log(f"agreement check on {ct * envs} transitions: {'ok' if ok else 'FAILED'}: {agreement}")

    rows = _rows(rewards, terminated, truncated)
    py_rows = _py_rows(rewards, terminated, truncated)
    setups = _setups(envs, n, gamma, rows, py_rows)
    keys = list(SYSTEMS)
    times: dict[str, list[float]] = {k: [] for k in keys}
    emitted: dict[str, int] = {}
    for rep in range(repeats):
        order = keys[rep % len(keys):] + keys[:rep % len(keys)]
        for key in order:
            run = setups[key]()
            ns, count = _timed(run)
            times[key].append(ns / transitions)
            emitted[key] = count
    if len(set(emitted.values())) != 1:
        ok = False
        log(f"emitted sample counts differ between systems: {emitted}")

    results: dict[str, dict[str, Any]] = {}
    twin_median = statistics.median(times["twin_python"])
    for key in keys:
        med = statistics.median(times[key])
        results[key] = {
            "label": SYSTEMS[key].format(envs=envs),
            "ns_per_transition": med,
            "ns_per_transition_median": med,
            "ns_per_transition_best": min(times[key]),
            "ns_per_transition_all": times[key],
            "speedup_vs_twin": twin_median / med,
            "samples_emitted": emitted[key],
        }
    batch = results["kernel_batch"]["ns_per_transition"]
    one = results["kernel_one"]["ns_per_transition"]
    speedup = results["kernel_batch"]["speedup_vs_twin"]
    targets = {
        "kernel_batch_ns_le_20": {"target": TARGET_BATCH_NS, "value": batch, "holds": batch <= TARGET_BATCH_NS},
        "kernel_batch_speedup_vs_twin_ge_100": {"target": TARGET_SPEEDUP, "value": speedup,
                                                 "holds": speedup >= TARGET_SPEEDUP},
        "kernel_one_ns_le_300": {"target": TARGET_ONE_NS, "value": one, "holds": one <= TARGET_ONE_NS},
    }
    return {
        "params": {"envs": envs, "n": n, "gamma": gamma, "steps_requested": steps, "steps_per_env": T,
                   "transitions": transitions, "repeats": repeats, "seed": seed, "episode_end_prob": 0.01,
                   "agreement_transitions": ct * envs},
        "machine": machine_info(),
        "agreement": {"ok": ok, "detail": agreement},
        "results": results,
        "targets": targets,
    }


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [
        "| system | ns/transition (median) | best | speed-up vs twin |",
        "|---|---:|---:|---:|",
    ]
    for res in report["results"].values():
        lines.append(
            f"| {res['label']} | {res['ns_per_transition_median']:.1f} | "
            f"{res['ns_per_transition_best']:.1f} | {res['speedup_vs_twin']:.1f}x |"
        )
    return "\n".join(lines)


def format_targets(report: dict[str, Any]) -> str:
    t = report["targets"]

    def mark(d):
        return "holds" if d["holds"] else "MISSED"

    a, b, c = (t["kernel_batch_ns_le_20"], t["kernel_batch_speedup_vs_twin_ge_100"], t["kernel_one_ns_le_300"])
    return "\n".join([
        f"target: batched kernel <= {a['target']:.0f} ns/transition: {mark(a)} ({a['value']:.1f} ns)",
        f"target: batched kernel >= {b['target']:.0f}x faster than the twin: {mark(b)} ({b['value']:.0f}x)",
        f"target: push_one <= {c['target']:.0f} ns/transition: {mark(c)} ({c['value']:.1f} ns)",
    ])
