"""Microbenchmark of the V-trace targets, run by ``asynca3c bench returns`` after the n-step table.

The learner computes V-trace targets for every sample of every minibatch at
every epoch, so their cost per step bounds the replay ratio it can afford.
Systems (nanoseconds per step of a ``[T, E]`` batch of segments):

``kernel``        ``vtrace``: validation, float64 copies and the compiled kernel, as the learner calls it;
``kernel_core``   the compiled ``vtrace_into`` alone on prepared arrays;
``numpy_scan``    numpy, backwards over t, vectorised over the E environments;
``twin_python``   ``reference_vtrace``, one element at a time in Python.

The data are random segments in the layout a NEXT_STEP vector env produces
(episode ends at about 2% of steps, each followed by an invalid autoreset
step). Each measurement runs every system over the same ``batches`` segment
batches; systems are interleaved in a rotating order across ``repeats``, and
all of them must agree before anything is timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from asynca3c.core._returns import vtrace_into
from asynca3c.core.vtrace import VTrace, reference_vtrace, vtrace

__all__ = ["VTRACE_SYSTEMS", "format_vtrace", "make_segments", "numpy_vtrace", "run_vtrace_benchmark"]

TARGET_NS = 30.0
TARGET_SPEEDUP = 100.0

VTRACE_SYSTEMS: dict[str, str] = {
    "kernel": "vtrace() (validation + compiled kernel)",
    "kernel_core": "compiled vtrace_into alone",
    "numpy_scan": "numpy, vectorised over envs",
    "twin_python": "reference twin reference_vtrace (Python)",
}


def make_segments(T: int, E: int, rng: np.random.Generator, end_prob: float = 0.02) -> dict[str, Any]:
    """One batch of segments, laid out as a NEXT_STEP vector env makes them."""
    ends = rng.random((T, E)) < end_prob
    ends[1:] &= ~ends[:-1]  # an episode end is followed by an autoreset step, not another end
    valid = np.ones((T, E), bool)
    valid[1:] = ~ends[:-1]
    ends &= valid
    terminated = ends & (rng.random((T, E)) < 0.6)
    return {"values": rng.normal(0, 3, (T + 1, E)), "rewards": rng.normal(0, 1, (T, E)),
            "log_rhos": rng.normal(0, 0.5, (T, E)), "terminated": terminated, "truncated": ends & ~terminated,
            "valid": valid}


def numpy_vtrace(values, rewards, log_rhos, terminated, truncated, valid, *, gamma: float,
                 rho_bar: float = 1.0, c_bar: float = 1.0) -> VTrace:
    """The same targets with numpy: a Python loop over t, vector operations over the environments."""
    ratio = np.exp(log_rhos)
    rho, c = np.minimum(rho_bar, ratio), np.minimum(c_bar, ratio)
    ends = terminated | truncated
    disc = np.where(terminated, 0.0, gamma)
    delta = rho * (rewards + disc * values[1:] - values[:-1])
    T, E = rewards.shape
    vs, adv = np.empty((T, E)), np.empty((T, E))
    after = np.zeros(E)
    for t in range(T - 1, -1, -1):
        goes_on = ~ends[t] & valid[t]
        q = rewards[t] + disc[t] * (values[t + 1] + np.where(goes_on, after, 0.0))
        after = np.where(valid[t], delta[t] + np.where(goes_on, gamma * c[t] * after, 0.0), 0.0)
        vs[t] = values[t] + after
        adv[t] = np.where(valid[t], rho[t] * (q - values[t]), 0.0)
    return VTrace(vs, adv)


def _core(seg: dict) -> Callable[[], object]:
    vs, adv, carry = np.empty_like(seg["rewards"]), np.empty_like(seg["rewards"]), np.empty(seg["rewards"].shape[1])
    args = (seg["values"], seg["rewards"], seg["log_rhos"], seg["terminated"], seg["truncated"], seg["valid"])
    return lambda: vtrace_into(*args, 0.99, 1.0, 1.0, vs, adv, carry)


def run_vtrace_benchmark(T: int = 20, E: int = 256, batches: int = 20, repeats: int = 5, seed: int = 0,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every system on the same segment batches; returns the figures as a JSON-ready dict."""
    rng = np.random.default_rng(seed)
    data = [make_segments(T, E, rng) for _ in range(batches)]
    calls: dict[str, Callable[[dict], Callable[[], object]]] = {
        "kernel": lambda s: lambda: vtrace(**s, gamma=0.99),
        "kernel_core": _core,
        "numpy_scan": lambda s: lambda: numpy_vtrace(**s, gamma=0.99),
        "twin_python": lambda s: lambda: reference_vtrace(**s, gamma=0.99),
    }
    check = data[0]
    want = reference_vtrace(**check, gamma=0.99)
    agree = all(np.allclose(got.vs, want.vs, rtol=1e-12, atol=1e-10)
                and np.allclose(got.advantages, want.advantages, rtol=1e-12, atol=1e-10)
                for got in (vtrace(**check, gamma=0.99), numpy_vtrace(**check, gamma=0.99)))
    log(f"V-trace agreement check on {T * E} steps: {'ok' if agree else 'FAILED'}")
    keys = list(VTRACE_SYSTEMS)
    times: dict[str, list[float]] = {k: [] for k in keys}
    steps = T * E * batches
    for rep in range(repeats):
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            runs = [calls[key](seg) for seg in data]
            t0 = time.perf_counter_ns()
            for run in runs:
                run()
            times[key].append((time.perf_counter_ns() - t0) / steps)
    twin = statistics.median(times["twin_python"])
    results: dict[str, dict[str, Any]] = {}
    for key, v in times.items():
        med = statistics.median(v)
        results[key] = {"label": VTRACE_SYSTEMS[key], "ns_per_step": med, "ns_per_step_best": min(v),
                        "ns_per_step_all": v, "speedup_vs_twin": twin / med}
    ns, speedup = results["kernel"]["ns_per_step"], results["kernel"]["speedup_vs_twin"]
    return {
        "params": {"T": T, "E": E, "batches": batches, "repeats": repeats, "seed": seed, "gamma": 0.99},
        "agreement": {"ok": bool(agree)},
        "results": results,
        "targets": {"vtrace_ns_le_30": {"target": TARGET_NS, "value": ns, "holds": ns <= TARGET_NS},
                    "vtrace_speedup_vs_twin_ge_100": {"target": TARGET_SPEEDUP, "value": speedup,
                                                      "holds": speedup >= TARGET_SPEEDUP}},
    }


def format_vtrace(report: dict[str, Any]) -> str:
    p = report["params"]
    lines = [f"\nV-trace targets, T={p['T']} E={p['E']} ({p['batches']} batches per measurement):",
             "| system | ns/step (median) | best | speed-up vs twin |", "|---|---:|---:|---:|"]
    for res in report["results"].values():
        lines.append(f"| {res['label']} | {res['ns_per_step']:.1f} | {res['ns_per_step_best']:.1f} | "
                     f"{res['speedup_vs_twin']:.1f}x |")
    a, b = report["targets"]["vtrace_ns_le_30"], report["targets"]["vtrace_speedup_vs_twin_ge_100"]
    lines.append(f"target: V-trace <= {a['target']:.0f} ns/step batched: {'holds' if a['holds'] else 'MISSED'} "
                 f"({a['value']:.1f} ns)")
    lines.append(f"target: V-trace >= {b['target']:.0f}x faster than its twin: "
                 f"{'holds' if b['holds'] else 'MISSED'} ({b['value']:.0f}x)")
    return "\n".join(lines)
