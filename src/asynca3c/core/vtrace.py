"""V-trace targets (IMPALA) of segments: the public face of the compiled kernel, and its Python twin.

Agents act with a policy mu that lags the learner's pi by a few versions. For a
batch of segments ``[T, E]`` (T steps of E environments) the learner computes,
with its current values V, the targets ``vs`` and the policy-gradient
advantages::

    rho_t = min(rho_bar, pi/mu),  c_t = min(c_bar, pi/mu)
    delta_t = rho_t * (r_t + gamma_t * V(x_{t+1}) - V(x_t))
    vs_t - V(x_t) = delta_t + gamma * c_t * (vs_{t+1} - V(x_{t+1}))     (while the episode goes on)
    adv_t = rho_t * (r_t + gamma_t * next_t - V(x_t))

where ``gamma_t`` is 0 at termination and gamma otherwise; the recursion does
not continue past a terminated or truncated step (a truncated step bootstraps
from its final observation, ``x_{t+1}`` in NEXT_STEP autoreset), nor past an
invalid (autoreset) step, whose target is its own value and whose advantage is
0. ``next_t`` is ``vs_{t+1}`` while the episode goes on inside the segment and
``V(x_{t+1})`` otherwise; the segment's last step bootstraps from ``V(x_T)``.
With pi = mu (and rho_bar, c_bar >= 1) ``vs_t`` is the (T - t)-step return
bootstrapped from the segment's end: A3C's own target.

``vtrace`` validates and calls the compiled kernel; ``reference_vtrace`` is a
plain-Python twin, element by element, that tests and benchmarks compare
against. There is no fallback from the kernel to the twin.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from asynca3c.core._returns import vtrace_into

__all__ = ["VTrace", "reference_vtrace", "vtrace"]


class VTrace(NamedTuple):
    vs: np.ndarray  # float64 [T, E]: value targets
    advantages: np.ndarray  # float64 [T, E]: policy-gradient advantages (rho-clipped)


def _float2d(x, name: str, shape: tuple[int, int] | None = None, check_finite: bool = True) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [T, E], got shape {a.shape}")
    if not np.can_cast(a.dtype, np.float64, "safe"):
        raise TypeError(f"{name} must be float64 or a dtype that casts to it safely (float32, integers), "
                        f"got dtype {a.dtype}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if check_finite and not np.isfinite(a).all():
        _not_finite(name, a, int(np.flatnonzero(~np.isfinite(a))[0]))
    return a


def _not_finite(name: str, a: np.ndarray, flat: int) -> None:
    t, e = divmod(flat, a.shape[1])
    raise ValueError(f"{name} must be finite, got {float(a.flat[flat])!r} at [{t}, {e}]")


def _flags2d(x, name: str, shape: tuple[int, int]) -> np.ndarray:
    a = np.asarray(x)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if a.dtype != np.bool_ and a.size:
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name} must be bool (or integers 0/1), got dtype {a.dtype}")
        if a.min() < 0 or a.max() > 1:
            raise ValueError(f"{name} must hold only 0 or 1, got values in [{a.min()}, {a.max()}]")
    return np.ascontiguousarray(a, dtype=np.bool_)


def _check_scalars(gamma: float, rho_bar: float, c_bar: float) -> None:
    for name, x in (("gamma", gamma), ("rho_bar", rho_bar), ("c_bar", c_bar)):
        if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a number, got {x!r}")
    if not 0.0 <= float(gamma) <= 1.0:  # also refuses NaN
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    for name, x in (("rho_bar", rho_bar), ("c_bar", c_bar)):
        if not (math.isfinite(x) and x > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {x!r}")


def _inputs(values, rewards, log_rhos, terminated, truncated, valid, gamma, rho_bar, c_bar, check_finite=True):
    """Validated, contiguous float64/bool arrays. ``check_finite=False`` leaves finiteness to the kernel,
    which checks it while it reads the data."""
    _check_scalars(gamma, rho_bar, c_bar)
    r = _float2d(rewards, "rewards", check_finite=check_finite)
    T, E = r.shape
    if T < 1 or E < 1:
        raise ValueError(f"rewards must hold at least one step of one env, got shape {r.shape}")
    v = _float2d(values, "values", (T + 1, E), check_finite)
    lr = _float2d(log_rhos, "log_rhos", (T, E), check_finite)
    te = _flags2d(terminated, "terminated", (T, E))
    tr = _flags2d(truncated, "truncated", (T, E))
    ok = np.ones((T, E), dtype=np.bool_) if valid is None else _flags2d(valid, "valid", (T, E))
    return v, r, lr, te, tr, ok


def vtrace(values, rewards, log_rhos, terminated, truncated, valid=None, *, gamma: float,
           rho_bar: float = 1.0, c_bar: float = 1.0) -> VTrace:
    """V-trace targets and advantages of a batch of segments (compiled).

    values: [T+1, E], V of every observation (the last row bootstraps); rewards,
    log_rhos (log pi - log mu of the action taken), terminated, truncated, valid
    (False on autoreset steps; default all True): [T, E].
    """
    v, r, lr, te, tr, ok = _inputs(values, rewards, log_rhos, terminated, truncated, valid, gamma, rho_bar, c_bar,
                                   check_finite=False)
    vs = np.empty_like(r)
    adv = np.empty_like(r)
    which, flat = vtrace_into(v, r, lr, te, tr, ok, float(gamma), float(rho_bar), float(c_bar), vs, adv,
                              np.empty(r.shape[1], dtype=np.float64))
    if which:
        name, a = (("values", v), ("rewards", r), ("log_rhos", lr))[which - 1]
        _not_finite(name, a, flat)
    return VTrace(vs, adv)


def reference_vtrace(values, rewards, log_rhos, terminated, truncated, valid=None, *, gamma: float,
                     rho_bar: float = 1.0, c_bar: float = 1.0) -> VTrace:
    """Plain-Python twin of ``vtrace``: one environment, one step at a time, backwards."""
    v, r, lr, te, tr, ok = _inputs(values, rewards, log_rhos, terminated, truncated, valid, gamma, rho_bar, c_bar)
    T, E = r.shape
    vs = [[0.0] * E for _ in range(T)]
    adv = [[0.0] * E for _ in range(T)]
    for e in range(E):
        after = 0.0  # vs - V of the next step of the same episode; 0 where it does not go on
        for t in reversed(range(T)):
            value, reward = float(v[t][e]), float(r[t][e])
            if not ok[t][e]:
                vs[t][e], adv[t][e], after = value, 0.0, 0.0
                continue
            ratio = math.exp(float(lr[t][e]))
            rho, c = min(rho_bar, ratio), min(c_bar, ratio)
            next_value = float(v[t + 1][e])
            if te[t][e]:
                target = reward
                diff = rho * (reward - value)
            elif tr[t][e]:
                target = reward + gamma * next_value
                diff = rho * (target - value)
            else:
                target = reward + gamma * (next_value + after)
                diff = rho * (reward + gamma * next_value - value) + gamma * c * after
            vs[t][e] = value + diff
            adv[t][e] = rho * (target - value)
            after = diff
    return VTrace(np.array(vs, dtype=np.float64), np.array(adv, dtype=np.float64))
