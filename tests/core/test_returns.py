"""Tests of the n-step returns: compiled kernel, offline function and plain-Python twin.

Semantics under test: per environment a window of at most n transitions; a
full window emits the sample of its oldest transition (return
sum(gamma**i * r), discount gamma**n, boot = start + n). An episode end flushes
the whole window: discount 0 when terminated, gamma**k when truncated (k =
window length from that sample to the end). ``nstep_returns`` treats the end of
its arrays as a truncation.
"""

from __future__ import annotations

import importlib.machinery
import math
import sys
import threading
import time
import types
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal

import asynca3c
import asynca3c.core._returns as compiled
import asynca3c.core.returns as returns_mod
from asynca3c.core.returns import (
    NStepKernel,
    ReferenceNStepBuffer,
    nstep_returns,
    reference_nstep_returns,
)

RTOL = 1e-12
ATOL = 1e-10  # rewards in [-10, 10], n <= 64: sums up to 640, cancellation allowed
DISC_ATOL = 1e-300  # gamma**k may underflow to subnormals, rounded differently by pow and products


# --------------------------------------------------------------------------- helpers
def oracle(rewards, terminated, truncated, gamma, n):
    """Independent expectation per transition t: (return, discount, k).

    The return is the exactly rounded sum (math.fsum) of r[t+i] * gamma**i over
    the k = min(n, steps to the episode's end) steps; the discount is 0 when
    the episode terminates within those k steps, else gamma**k. The end of the
    arrays is a truncation.
    """
    T = len(rewards)
    ends = np.empty(T, dtype=np.int64)
    end = T - 1
    for t in range(T - 1, -1, -1):
        if terminated[t] or truncated[t]:
            end = t
        ends[t] = end
    ret = np.empty(T)
    disc = np.empty(T)
    ks = np.empty(T, dtype=np.int64)
    for t in range(T):
        k = min(n, int(ends[t]) - t + 1)
        ks[t] = k
        ret[t] = math.fsum(float(rewards[t + i]) * gamma**i for i in range(k))
        disc[t] = 0.0 if (terminated[ends[t]] and ends[t] - t + 1 <= n) else gamma**k
    return ret, disc, ks


def samples_of(kernel, count):
    """Copy of the first ``count`` output rows of a kernel as a list of tuples."""
    return list(
        zip(
            kernel.env[:count].tolist(),
            kernel.start[:count].tolist(),
            kernel.boot[:count].tolist(),
            kernel.returns[:count].tolist(),
            kernel.discounts[:count].tolist(),
        )
    )


def run_push_one(rewards, terminated, truncated, gamma, n):
    """One env of a fresh kernel fed by push_one; end of arrays = truncation."""
    T = len(rewards)
    k = NStepKernel(1, n, gamma)
    out = []
    for t in range(T):
        c = k.push_one(0, float(rewards[t]), bool(terminated[t]), bool(truncated[t]) or t == T - 1)
        out.extend(samples_of(k, c))
    assert_array_equal(k.pending, [0])
    return out


def as_arrays(samples, T):
    """Samples of one env as per-transition arrays; each transition exactly once."""
    ret = np.full(T, np.nan)
    disc = np.full(T, np.nan)
    boot = np.full(T, -1, dtype=np.int64)
    seen = np.zeros(T, dtype=np.int64)
    for _, start, b, r, d in samples:
        seen[start] += 1
        ret[start], disc[start], boot[start] = r, d, b
    assert_array_equal(seen, np.ones(T, dtype=np.int64), err_msg="every transition yields exactly one sample")
    return ret, disc, boot


def seed_incremental_returns(rewards, gamma, n):
    """The seed's O(1) update R = (R + r*gamma**n)/gamma on one open episode.

    Returns the n-step return of every transition whose window filled.
    """
    gamma_n = gamma**n
    out = np.full(len(rewards), np.nan)
    R = 0.0
    window = []
    for t, r in enumerate(rewards.tolist()):
        window.append(r)
        R = (R + r * gamma_n) / gamma
        if len(window) >= n:
            out[t - n + 1] = R
            R -= window.pop(0)
    return out


# --------------------------------------------------------------------------- strategies
GAMMAS = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
NS = st.integers(1, 64)
END_KINDS = st.sampled_from(["terminated", "truncated", "both", "none"])


@st.composite
def trajectories(draw, max_episodes=5, max_episode_len=120):
    """(rewards, terminated, truncated) made of episodes of random lengths and ends."""
    episodes = draw(
        st.lists(st.tuples(st.integers(1, max_episode_len), END_KINDS), min_size=0, max_size=max_episodes)
    )
    T = sum(length for length, _ in episodes)
    rewards = draw(hnp.arrays(np.float64, T, elements=st.floats(-10.0, 10.0)))
    terminated = np.zeros(T, dtype=bool)
    truncated = np.zeros(T, dtype=bool)
    pos = 0
    for length, kind in episodes:
        pos += length
        terminated[pos - 1] = kind in ("terminated", "both")
        truncated[pos - 1] = kind in ("truncated", "both")
    return rewards, terminated, truncated


# --------------------------------------------------------------------------- hand-computed cases
def all_three(rewards, terminated, truncated, gamma, n):
    """(returns, discounts) from nstep_returns, the twin and push_one; asserts they agree."""
    got = nstep_returns(rewards, terminated, truncated, gamma, n)
    ref = reference_nstep_returns(rewards, terminated, truncated, gamma, n)
    one_ret, one_disc, _ = as_arrays(run_push_one(rewards, terminated, truncated, gamma, n), len(rewards))
    for r, d in (ref, (one_ret, one_disc)):
        assert_allclose(r, got[0], rtol=RTOL, atol=0)
        assert_allclose(d, got[1], rtol=RTOL, atol=0)
    return got


def test_short_episode_shorter_than_n_terminated():
    r = [1.0, 2.0, 3.0]
    ret, disc = all_three(r, [False, False, True], [False] * 3, 0.5, 5)
    assert_allclose(ret, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0], rtol=0, atol=0)
    assert_array_equal(disc, [0.0, 0.0, 0.0])
    k = NStepKernel(1, 5, 0.5)
    assert k.push_one(0, 1.0) == 0 and k.push_one(0, 2.0) == 0
    assert_array_equal(k.pending, [2])
    c = k.push_one(0, 3.0, terminated=True)
    assert c == 3
    assert sorted(samples_of(k, c)) == [(0, 0, 3, 2.75, 0.0), (0, 1, 3, 3.5, 0.0), (0, 2, 3, 3.0, 0.0)]
    assert_array_equal(k.pending, [0])


def test_short_episode_truncated_by_array_end():
    ret, disc = all_three([1.0, 2.0], [False, False], [False, False], 0.5, 5)
    assert_allclose(ret, [2.0, 2.0], rtol=0, atol=0)
    assert_allclose(disc, [0.25, 0.5], rtol=0, atol=0)


def test_termination_mid_window():
    # n=3, gamma=0.5; episode [0..3] terminates at 3, then a 1-step episode cut by the array end.
    r = [1.0, 1.0, 1.0, 1.0, 1.0]
    te = [False, False, False, True, False]
    ret, disc = all_three(r, te, [False] * 5, 0.5, 3)
    assert_allclose(ret, [1.75, 1.75, 1.5, 1.0, 1.0], rtol=0, atol=0)
    assert_allclose(disc, [0.125, 0.0, 0.0, 0.0, 0.5], rtol=0, atol=0)
    k = NStepKernel(1, 3, 0.5)
    out = []
    for t in range(5):
        out.extend(samples_of(k, k.push_one(0, r[t], te[t], t == 4)))
    assert sorted(out) == [
        (0, 0, 3, 1.75, 0.125),  # window full at step 2, bootstraps from obs 3
        (0, 1, 4, 1.75, 0.0),  # window fills at the terminal step: discount 0
        (0, 2, 4, 1.5, 0.0),
        (0, 3, 4, 1.0, 0.0),
        (0, 4, 5, 1.0, 0.5),
    ]


def test_truncation_discount_per_sample():
    # n=3, gamma=0.5, truncated at step 3 (mid array), then a new 2-step episode.
    r = [1.0, 2.0, 3.0, 4.0, 8.0, 16.0]
    tr = [False, False, False, True, False, False]
    ret, disc = all_three(r, [False] * 6, tr, 0.5, 3)
    assert_allclose(ret, [2.75, 4.5, 5.0, 4.0, 16.0, 16.0], rtol=0, atol=0)
    assert_allclose(disc, [0.125, 0.125, 0.25, 0.5, 0.25, 0.5], rtol=0, atol=0)
    k = NStepKernel(1, 3, 0.5)
    out = []
    for t in range(6):
        out.extend(samples_of(k, k.push_one(0, r[t], False, tr[t] or t == 5)))
    assert sorted(out) == [
        (0, 0, 3, 2.75, 0.125),
        (0, 1, 4, 4.5, 0.125),
        (0, 2, 4, 5.0, 0.25),
        (0, 3, 4, 4.0, 0.5),
        (0, 4, 6, 16.0, 0.25),
        (0, 5, 6, 16.0, 0.5),
    ]


def test_gamma_zero():
    r = [1.5, -2.0, 3.0, 4.0, 5.0]
    ret, disc = all_three(r, [False, True, False, False, False], [False, False, False, True, False], 0.0, 3)
    assert_array_equal(ret, r)  # only the first reward counts
    assert_array_equal(disc, np.zeros(5))  # 0**k == 0 for k >= 1


def test_gamma_one():
    r = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    te = [False, False, False, True, False, False]
    ret, disc = all_three(r, te, [False] * 6, 1.0, 2)
    assert_array_equal(ret, [3.0, 5.0, 7.0, 4.0, 11.0, 6.0])
    assert_array_equal(disc, [1.0, 1.0, 0.0, 0.0, 1.0, 1.0])


def test_n_one():
    r = [1.0, -2.0, 3.0, 4.0]
    ret, disc = all_three(r, [False, True, False, False], [False, False, True, False], 0.9, 1)
    assert_array_equal(ret, r)
    assert_array_equal(disc, [0.9, 0.0, 0.9, 0.9])


def test_empty_trajectory():
    for f in (nstep_returns, reference_nstep_returns):
        ret, disc = f([], [], [], 0.9, 3)
        assert ret.shape == disc.shape == (0,) and ret.dtype == disc.dtype == np.float64


def test_n_larger_than_trajectory_is_capped_by_the_episode():
    r = np.arange(1.0, 11.0)
    z = np.zeros(10, dtype=bool)
    big = nstep_returns(r, z, z, 0.9, 10**6)
    assert_array_equal(big[0], nstep_returns(r, z, z, 0.9, 10)[0])
    assert_array_equal(big[1], nstep_returns(r, z, z, 0.9, 10)[1])


def test_batch_push_with_next_step_autoreset_by_hand():
    # Two envs, n=2, gamma=0.5. Env 1 terminates at its step 1; step 2 is its
    # autoreset step (masked); its next episode starts at step 3.
    k = NStepKernel(2, 2, 0.5)
    F, T = False, True
    assert k.push([1.0, 10.0], [F, F], [F, F]) == 0
    c = k.push([2.0, 20.0], [F, T], [F, F])
    assert sorted(samples_of(k, c)) == [(0, 0, 2, 2.0, 0.25), (1, 0, 2, 20.0, 0.0), (1, 1, 2, 20.0, 0.0)]
    c = k.push([4.0, np.nan], [F, F], [F, F], mask=[T, F])
    assert samples_of(k, c) == [(0, 1, 3, 4.0, 0.25)]
    assert_array_equal(k.steps, [3, 3])
    assert k.push([8.0, 40.0], [F, F], [T, T]) == 3
    assert sorted(samples_of(k, 3)) == [(0, 2, 4, 8.0, 0.25), (0, 3, 4, 8.0, 0.5), (1, 3, 4, 40.0, 0.5)]


def test_masked_slots_are_ignored():
    """A masked env's reward and flags (NaN, inf, True) are neither checked nor recorded."""
    k = NStepKernel(3, 2, 0.5)
    m = [True, False, True]
    c = k.push([1.0, np.nan, 2.0], [False, True, False], [False, True, False], mask=m)
    assert c == 0
    c = k.push([3.0, np.inf, 4.0], [False, True, True], [False, True, False], mask=m)
    assert sorted(samples_of(k, c)) == [(0, 0, 2, 2.5, 0.25), (2, 0, 2, 4.0, 0.0), (2, 1, 2, 4.0, 0.0)]
    assert_array_equal(k.steps, [2, 2, 2])
    assert_array_equal(k.pending, [1, 0, 0])


# --------------------------------------------------------------------------- properties
HYPO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPO
@given(traj=trajectories(), gamma=GAMMAS, n=NS)
def test_offline_twin_and_push_one_agree(traj, gamma, n):
    rewards, terminated, truncated = traj
    T = len(rewards)
    exp_ret, exp_disc, exp_k = oracle(rewards, terminated, truncated, gamma, n)

    got_ret, got_disc = nstep_returns(rewards, terminated, truncated, gamma, n)
    ref_ret, ref_disc = reference_nstep_returns(rewards, terminated, truncated, gamma, n)
    one_ret, one_disc, one_boot = as_arrays(run_push_one(rewards, terminated, truncated, gamma, n), T)

    for ret, disc in ((got_ret, got_disc), (ref_ret, ref_disc), (one_ret, one_disc)):
        assert_allclose(ret, exp_ret, rtol=RTOL, atol=ATOL)
        assert_allclose(disc, exp_disc, rtol=RTOL, atol=DISC_ATOL)
    assert_allclose(got_ret, ref_ret, rtol=RTOL, atol=ATOL)
    assert_allclose(got_ret, one_ret, rtol=RTOL, atol=ATOL)
    assert_array_equal(one_boot - np.arange(T), exp_k)  # boot - start == k
    # discount is exactly 0 where the episode terminates within the window, else gamma**k
    terminal = np.array([bool(terminated[t : t + exp_k[t]].any()) for t in range(T)], dtype=bool)
    for disc in (got_disc, ref_disc, one_disc):
        assert_array_equal(disc[terminal], 0.0)
        assert_allclose(disc[~terminal], gamma ** exp_k[~terminal], rtol=RTOL, atol=DISC_ATOL)


@st.composite
def env_batches(draw):
    """Per env a trajectory and whether its autoreset steps are masked (NEXT_STEP)."""
    num_envs = draw(st.integers(1, 5))
    trajs = [draw(trajectories(max_episodes=4, max_episode_len=80)) for _ in range(num_envs)]
    next_step = draw(st.lists(st.booleans(), min_size=num_envs, max_size=num_envs))
    lead = draw(st.lists(st.integers(0, 3), min_size=num_envs, max_size=num_envs))
    return trajs, next_step, lead


def schedule(rewards, terminated, truncated, next_step, lead):
    """Per-step (reward, terminated, truncated, mask) rows of one env, and step -> t.

    ``lead`` masked steps first (the env has not started), then the
    trajectory; with ``next_step`` every episode end is followed by a masked
    autoreset step, as gymnasium's NEXT_STEP autoreset mode produces. The last
    transition is marked truncated (like ``nstep_returns``'s array end).
    """
    rows = [(0.0, False, False, False)] * lead
    t_of_step = {}
    T = len(rewards)
    for t in range(T):
        last = t == T - 1
        t_of_step[len(rows)] = t
        rows.append((float(rewards[t]), bool(terminated[t]), bool(truncated[t]) or last, True))
        if next_step and (terminated[t] or truncated[t]) and not last:
            rows.append((0.0, False, False, False))
    return rows, t_of_step


@HYPO
@given(batch=env_batches(), gamma=GAMMAS, n=NS, order=st.randoms(use_true_random=False))
def test_batched_push_with_masks_and_interleaved_push_one_agree(batch, gamma, n, order):
    trajs, next_step, lead = batch
    E = len(trajs)
    scheds = [schedule(*traj, ns, ld) for traj, ns, ld in zip(trajs, next_step, lead)]
    L = max(len(rows) for rows, _ in scheds)
    pad = (0.0, False, False, False)
    grid = [rows + [pad] * (L - len(rows)) for rows, _ in scheds]

    # (c-i) the kernel fed every env at every push call
    k = NStepKernel(E, n, gamma)
    got: dict[tuple[int, int], tuple] = {}
    for step in range(L):
        r, te, tr, m = (np.array([grid[e][step][j] for e in range(E)]) for j in range(4))
        c = k.push(r, te.astype(bool), tr.astype(bool), mask=None if m.all() else m.astype(bool))
        for env, start, boot, ret, disc in samples_of(k, c):
            t = scheds[env][1][start]  # KeyError: a sample started at a masked step
            assert (env, t) not in got, "a transition yielded two samples"
            got[(env, t)] = (boot - start, ret, disc)
    assert_array_equal(k.pending, np.zeros(E))
    assert_array_equal(k.steps, np.full(E, L))

    # (c-ii) the kernel fed one transition per push_one call, envs interleaved at random
    k1 = NStepKernel(E, n, gamma)
    got1: dict[tuple[int, int], tuple] = {}
    queue = [e for e, traj in enumerate(trajs) for _ in range(len(traj[0]))]
    order.shuffle(queue)  # per-env order is kept below: each env takes its next transition
    nxt = [0] * E
    for e in queue:
        t = nxt[e]
        nxt[e] += 1
        rewards, terminated, truncated = trajs[e]
        c = k1.push_one(e, float(rewards[t]), bool(terminated[t]), bool(truncated[t]) or t == len(rewards) - 1)
        for env, start, boot, ret, disc in samples_of(k1, c):
            assert (env, start) not in got1
            got1[(env, start)] = (boot - start, ret, disc)
    assert_array_equal(k1.pending, np.zeros(E))

    for e, (rewards, terminated, truncated) in enumerate(trajs):
        T = len(rewards)
        exp_ret, exp_disc, exp_k = oracle(rewards, terminated, truncated, gamma, n)
        off_ret, off_disc = nstep_returns(rewards, terminated, truncated, gamma, n)
        ref_ret, ref_disc = reference_nstep_returns(rewards, terminated, truncated, gamma, n)
        for samples in (got, got1):
            assert sorted(t for (env, t) in samples if env == e) == list(range(T))
            ks = np.array([samples[(e, t)][0] for t in range(T)], dtype=np.int64)
            ret = np.array([samples[(e, t)][1] for t in range(T)])
            disc = np.array([samples[(e, t)][2] for t in range(T)])
            assert_array_equal(ks, exp_k)  # boot - start == k
            for r_, d_ in ((exp_ret, exp_disc), (off_ret, off_disc), (ref_ret, ref_disc)):
                assert_allclose(ret, r_, rtol=RTOL, atol=ATOL)
                assert_allclose(disc, d_, rtol=RTOL, atol=DISC_ATOL)
    assert len(got) == len(got1) == sum(len(traj[0]) for traj in trajs)


# --------------------------------------------------------------------------- exactness
def test_exact_on_a_million_step_episode_and_the_seed_update_drifts():
    T, n, gamma = 10**6, 8, 0.99
    rng = np.random.default_rng(20240601)
    r = rng.uniform(0.0, 1.0, T)
    z = np.zeros(T, dtype=bool)
    ret, disc = nstep_returns(r, z, z, gamma, n)  # one episode, truncated by the array end

    # float64 sum over the n shifted arrays (zeros past the end: the last windows are short)
    padded = np.concatenate([r, np.zeros(n)])
    expected = np.zeros(T)
    for i in range(n):
        expected += gamma**i * padded[i : i + T]
    assert_allclose(ret, expected, rtol=1e-12, atol=0)
    k = np.minimum(n, T - np.arange(T))
    assert_allclose(disc, gamma**k, rtol=1e-12, atol=0)

    # exact rational arithmetic on a sample of positions, the last n included
    g = Fraction(gamma)
    positions = np.concatenate([rng.choice(T - n, 300, replace=False), np.arange(T - n, T)])
    for t in positions.tolist():
        exact = sum(Fraction(float(r[t + i])) * g**i for i in range(min(n, T - t)))
        assert abs(Fraction(float(ret[t])) - exact) <= Fraction(1, 10**13) * exact

    # the streaming kernel on the same episode, one transition per call
    kern = NStepKernel(1, n, gamma)
    stream = np.empty(T)
    push_one = kern.push_one
    out_start, out_ret = kern.start, kern.returns
    rl = r.tolist()
    for t in range(T):
        c = push_one(0, rl[t], False, t == T - 1)
        if c == 1:
            stream[out_start[0]] = out_ret[0]
        elif c:
            stream[out_start[:c]] = out_ret[:c]
    assert_array_equal(stream, ret)

    # The seed's incremental update divides its rounding error by gamma every
    # step: within a few thousand steps its returns are garbage, while the
    # kernel's stay exact on the same prefix.
    for g_, steps in ((0.9, 3000), (0.99, 20000)):
        seed = seed_incremental_returns(r[:steps], g_, n)
        full = steps - n + 1  # samples whose window filled before the prefix ends
        kernel_ret, _ = nstep_returns(r[:steps], z[:steps], z[:steps], g_, n)
        prefix = np.concatenate([r[:steps], np.zeros(n)])  # the prefix's end truncates it
        exact = np.zeros(steps)
        for i in range(n):
            exact += g_**i * prefix[i : i + steps]
        assert_allclose(kernel_ret, exact, rtol=1e-12, atol=0)
        with np.errstate(all="ignore"):
            err = np.abs(seed[:full] - exact[:full])
        assert err[: 10 * n].max() < 1e-9, "the seed update starts out right"
        # then drifts: not a rounding difference, the returns become meaningless
        far = ~np.isfinite(err) | (err > 1e3)
        assert far.any(), f"seed error only {err.max()!r} with gamma={g_}"
        assert far[-100:].all()


# --------------------------------------------------------------------------- bad inputs
Z3 = np.zeros(3, dtype=bool)
R3 = np.array([1.0, 2.0, 3.0])
LONGDOUBLE_IS_WIDER = not np.can_cast(np.longdouble, np.float64, "safe")


@pytest.mark.parametrize("f", [nstep_returns, reference_nstep_returns])
@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (([1.0, 2.0, 3.0], [False, False], Z3), ValueError, r"same length, got 3, 2 and 3"),
        ((R3, Z3, np.zeros(4, bool)), ValueError, r"same length, got 3, 3 and 4"),
        ((np.array([1 + 0j, 2, 3]), Z3, Z3), TypeError, r"rewards must be float64 .*got dtype complex128"),
        ((np.array(["1.0", "2", "3"]), Z3, Z3), TypeError, r"rewards must be float64 .*got dtype <U3"),
        (([1.0, None, 3.0], Z3, Z3), TypeError, r"rewards must be float64 .*got dtype object"),
        ((np.ones((3, 1)), Z3, Z3), ValueError, r"rewards must be a 1-D array, got shape \(3, 1\)"),
        ((R3, np.array([0.0, 1.0, 0.0]), Z3), TypeError,
         r"terminated must be bool \(or integers 0/1\), got dtype float64"),
        ((R3, Z3, [0.5, 0.0, 0.0]), TypeError, r"truncated must be bool \(or integers 0/1\), got dtype float64"),
        ((R3, Z3, np.array([0, 2, 1])), ValueError, r"truncated must hold only 0 or 1, got values in \[0, 2\]"),
        ((R3, np.array([-1, 0, 0]), Z3), ValueError, r"terminated must hold only 0 or 1, got values in \[-1, 0\]"),
        (([1.0, np.nan, 3.0], Z3, Z3), ValueError, r"rewards must be finite, got nan at index 1"),
        (([1.0, 2.0, np.inf], Z3, Z3), ValueError, r"rewards must be finite, got inf at index 2"),
        (([-np.inf, 2.0, 3.0], Z3, Z3), ValueError, r"rewards must be finite, got -inf at index 0"),
    ],
)
def test_bad_trajectory_inputs(f, args, exc, match):
    with pytest.raises(exc, match=match):
        f(*args, 0.9, 2)


@pytest.mark.skipif(not LONGDOUBLE_IS_WIDER, reason="longdouble is float64 here")
@pytest.mark.parametrize("f", [nstep_returns, reference_nstep_returns])
def test_longdouble_rewards_refused(f):
    with pytest.raises(TypeError, match=rf"got dtype {np.dtype(np.longdouble)}"):
        f(np.ones(3, dtype=np.longdouble), Z3, Z3, 0.9, 2)


@pytest.mark.parametrize("f", [nstep_returns, reference_nstep_returns])
@pytest.mark.parametrize(
    ("gamma", "n", "exc", "match"),
    [
        (1.5, 2, ValueError, r"gamma must be in \[0, 1\], got 1\.5"),
        (-0.1, 2, ValueError, r"gamma must be in \[0, 1\], got -0\.1"),
        (float("nan"), 2, ValueError, r"gamma must be in \[0, 1\], got nan"),
        (float("inf"), 2, ValueError, r"gamma must be in \[0, 1\], got inf"),
        ("0.9", 2, TypeError, r"gamma must be a number in \[0, 1\], got '0\.9'"),
        (None, 2, TypeError, r"gamma must be a number in \[0, 1\], got None"),
        (True, 2, TypeError, r"gamma must be a number in \[0, 1\], got True"),
        (0.9, 0, ValueError, r"n must be >= 1, got 0"),
        (0.9, -3, ValueError, r"n must be >= 1, got -3"),
        (0.9, 2.0, TypeError, r"n must be an integer >= 1, got 2\.0"),
        (0.9, True, TypeError, r"n must be an integer >= 1, got True"),
    ],
)
def test_bad_gamma_and_n(f, gamma, n, exc, match):
    with pytest.raises(exc, match=match):
        f(R3, Z3, Z3, gamma, n)


def test_bad_gamma_and_n_for_the_buffer_and_the_kernel():
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\], got nan"):
        ReferenceNStepBuffer(2, 3, float("nan"))
    with pytest.raises(ValueError, match=r"n must be >= 1, got 0"):
        ReferenceNStepBuffer(2, 0, 0.9)
    for gamma in (float("nan"), 1.0000000001, -1e-300, float("-inf")):
        with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\], got "):
            NStepKernel(2, 3, gamma)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\], got nan"):
        NStepKernel(2, 3, float("nan"))
    with pytest.raises(ValueError, match=r"n must be >= 1, got 0"):
        NStepKernel(2, 0, 0.9)
    with pytest.raises(ValueError, match=r"num_envs must be >= 1, got 0"):
        NStepKernel(0, 3, 0.9)
    with pytest.raises(TypeError, match=r"str"):
        NStepKernel(2, 3, "0.9")


F4 = np.zeros(4, dtype=bool)
R4 = np.array([1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((R4[:3], F4, F4), {}, ValueError, r"rewards must have length num_envs=4, got 3"),
        ((R4, np.zeros(5, bool), F4), {}, ValueError, r"terminated must have length num_envs=4, got 5"),
        ((R4, F4, [False] * 3), {}, ValueError, r"truncated must have length num_envs=4, got 3"),
        ((R4, F4, F4), {"mask": np.ones(2, bool)}, ValueError, r"mask must have length num_envs=4, got 2"),
        ((R4.astype(complex), F4, F4), {}, TypeError, r"rewards must be float64 .*got dtype complex128"),
        ((np.array(["a"] * 4), F4, F4), {}, TypeError, r"rewards must be float64 .*got dtype <U1"),
        ((R4.reshape(2, 2), F4, F4), {}, ValueError, r"rewards must be a 1-D array, got shape \(2, 2\)"),
        ((R4, np.zeros(4), F4), {}, TypeError, r"terminated must be bool \(or integers 0/1\), got dtype float64"),
        ((R4, F4, F4), {"mask": np.ones(4)}, TypeError, r"mask must be bool \(or integers 0/1\), got dtype float64"),
        ((R4, F4, np.array([0, 0, 3, 0])), {}, ValueError, r"truncated must hold only 0 or 1, got values in \[0, 3\]"),
        ((np.array([1.0, 2.0, np.nan, 4.0]), F4, F4), {}, ValueError, r"rewards must be finite, got nan for env 2"),
        ((np.array([1.0, -np.inf, 3, 4]), F4, F4), {}, ValueError, r"rewards must be finite, got -inf for env 1"),
    ],
)
def test_bad_push_inputs_leave_the_kernel_unchanged(args, kwargs, exc, match):
    k = NStepKernel(4, 3, 0.5)
    k.push(R4, F4, F4)
    with pytest.raises(exc, match=match):
        k.push(*args, **kwargs)
    assert_array_equal(k.steps, [1, 1, 1, 1])
    assert_array_equal(k.pending, [1, 1, 1, 1])


@pytest.mark.skipif(not LONGDOUBLE_IS_WIDER, reason="longdouble is float64 here")
def test_push_refuses_longdouble():
    with pytest.raises(TypeError, match=rf"rewards must be float64 .*got dtype {np.dtype(np.longdouble)}"):
        NStepKernel(4, 3, 0.5).push(R4.astype(np.longdouble), F4, F4)


def test_masking_an_open_window_is_an_error_and_changes_nothing():
    k = NStepKernel(3, 3, 0.5)
    k.push([1.0, 2.0, 3.0], [False, True, False], [False, False, False])  # env 1 terminated
    k.push([1.0, 0.0, 3.0], [False] * 3, [False] * 3, mask=[True, False, True])  # its autoreset step
    before = (k.steps.copy(), k.pending.copy())
    with pytest.raises(ValueError, match=r"mask is False for env 2 while its episode has 2 pending transitions"):
        k.push([1.0, 0.0, 3.0], [False] * 3, [False] * 3, mask=[True, False, False])
    assert_array_equal(k.steps, before[0])
    assert_array_equal(k.pending, before[1])
    # the kernel carries on as if the bad call never happened
    c = k.push([4.0, 5.0, 6.0], [False] * 3, [True] * 3)
    got = sorted(samples_of(k, c))
    assert got == [
        (0, 0, 3, 1.0 + 0.5 + 0.25 * 4.0, 0.125),
        (0, 1, 3, 1.0 + 0.5 * 4.0, 0.25),
        (0, 2, 3, 4.0, 0.5),
        (1, 2, 3, 5.0, 0.5),
        (2, 0, 3, 3.0 + 1.5 + 0.25 * 6.0, 0.125),
        (2, 1, 3, 3.0 + 0.5 * 6.0, 0.25),
        (2, 2, 3, 6.0, 0.5),
    ]


def test_bad_push_one_inputs():
    k = NStepKernel(4, 3, 0.5)
    with pytest.raises(IndexError, match=r"env must be in \[0, 4\), got 4"):
        k.push_one(4, 1.0)
    with pytest.raises(IndexError, match=r"env must be in \[0, 4\), got -1"):
        k.push_one(-1, 1.0)
    with pytest.raises(ValueError, match=r"rewards must be finite, got nan for env 1"):
        k.push_one(1, float("nan"))
    with pytest.raises(ValueError, match=r"rewards must be finite, got inf for env 3"):
        k.push_one(3, float("inf"))
    with pytest.raises(TypeError, match=r"must be real number, not str"):
        k.push_one(0, "1.0")
    with pytest.raises(TypeError, match=r"must be real number, not complex"):
        k.push_one(0, 1j)
    assert_array_equal(k.steps, [0, 0, 0, 0])
    buf = ReferenceNStepBuffer(2, 3, 0.5)
    with pytest.raises(ValueError, match=r"rewards must be finite, got nan for env 1"):
        buf.push_one(1, float("nan"))


# --------------------------------------------------------------------------- safe casts
def test_safe_casts_give_the_same_results():
    r64 = np.array([0.5, -1.25, 3.0, 0.1, 7.0, -2.5, 1.0])
    r32 = r64.astype(np.float32)
    te = np.array([0, 0, 1, 0, 0, 0, 0])
    tr = np.array([0, 0, 0, 0, 1, 0, 0])
    base = nstep_returns(r32.astype(np.float64), te.astype(bool), tr.astype(bool), 0.9, 3)
    variants = [
        (r32, te, tr),
        (r32, te.astype(np.int8), tr.astype(np.uint8)),
        (r32.astype(np.float64).tolist(), te.tolist(), tr.astype(bool).tolist()),
        (np.repeat(r32.astype(np.float64), 2)[::2], np.repeat(te, 2)[::2], tr),  # non-contiguous
    ]
    for r, a, b in variants:
        for f in (nstep_returns, reference_nstep_returns):
            got = f(r, a, b, 0.9, 3)
            assert_allclose(got[0], base[0], rtol=RTOL, atol=0)
            assert_allclose(got[1], base[1], rtol=RTOL, atol=0)
    ints = nstep_returns(np.array([1, 2, 3], dtype=np.int64), [0, 0, 0], [0, 0, 0], 0.5, 2)
    assert_array_equal(ints[0], [2.0, 3.5, 3.0])

    ref = NStepKernel(3, 2, 0.5)
    casted = NStepKernel(3, 2, 0.5)
    for step in range(4):
        r = np.array([1.5, -2.0, 0.25]) * (step + 1)
        te = np.array([0, step == 2, 0])
        tr = np.array([0, 0, step == 3])
        c0 = ref.push(r, te.astype(bool), tr.astype(bool))
        c1 = casted.push(r.astype(np.float32), te.astype(np.int64), tr.tolist(), mask=[1, 1, 1])
        assert c0 == c1
        assert samples_of(ref, c0) == samples_of(casted, c1)
    c1 = casted.push([1, 2, 3], [0, 0, 0], [False, False, False])
    c0 = ref.push(np.array([1.0, 2.0, 3.0]), np.zeros(3, bool), np.zeros(3, bool))
    assert c0 == c1 > 0
    assert samples_of(ref, c0) == samples_of(casted, c1)


def test_nstep_returns_accepts_numpy_scalars_for_gamma_and_n():
    a = nstep_returns(R3, Z3, Z3, np.float32(0.5), np.int64(2))
    b = nstep_returns(R3, Z3, Z3, 0.5, 2)
    assert_array_equal(a[0], b[0])
    assert_array_equal(a[1], b[1])


def test_push_accepts_byteswapped_rewards():
    r = np.array([1.0, 2.0, 3.0, 4.0])
    k = NStepKernel(4, 1, 0.5)
    c = k.push(r.astype(">f8" if sys.byteorder == "little" else "<f8"), F4, F4)
    assert_array_equal(k.returns[:c], r)


def test_nstep_returns_accepts_byteswapped_rewards():
    r = np.array([1.0, 2.0, 3.0, 4.0])
    swapped = r.astype(">f8" if sys.byteorder == "little" else "<f8")
    assert_array_equal(nstep_returns(swapped, F4, F4, 0.5, 1)[0], r)


# --------------------------------------------------------------------------- compiled module
def test_compiled_kernel_is_in_use():
    assert compiled.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), compiled.__file__
    assert returns_mod.NStepKernel is compiled.NStepKernel
    assert asynca3c.NStepKernel is compiled.NStepKernel
    assert asynca3c.nstep_returns is returns_mod.nstep_returns
    assert returns_mod.nstep_returns is not returns_mod.reference_nstep_returns
    assert returns_mod.trajectory_returns is compiled.trajectory_returns
    # compiled callables, not Python functions
    assert not isinstance(compiled.trajectory_returns, types.FunctionType)
    assert not isinstance(NStepKernel.push, types.FunctionType)
    assert not isinstance(NStepKernel.push_one, types.FunctionType)
    assert isinstance(ReferenceNStepBuffer.push_one, types.FunctionType)


# --------------------------------------------------------------------------- GIL
def _max_gap_while(call) -> tuple[int, int]:
    """Largest gap (ns) between a spinning Python thread's timestamps during call().

    A call that holds the GIL stops the other thread for its whole duration; one
    that releases it lets the thread run on, leaving only small gaps.
    """
    stamps: list[int] = []
    stop = [False]
    started = threading.Event()

    def spin():
        append, now = stamps.append, time.perf_counter_ns
        started.set()
        while not stop[0]:
            append(now())

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    started.wait()
    time.sleep(0.01)
    t0 = time.perf_counter_ns()
    call()
    t1 = time.perf_counter_ns()
    stop[0] = True
    th.join()
    points = [t0, *(s for s in stamps if t0 < s < t1), t1]
    return max(b - a for a, b in zip(points, points[1:])), t1 - t0


def test_push_releases_the_gil():
    E = 400_000
    rng = np.random.default_rng(0)
    r = rng.uniform(-1.0, 1.0, E)
    te = rng.random(E) < 0.5
    tr = np.zeros(E, dtype=bool)

    # Control: a C call of similar length that holds the GIL blocks the thread throughout.
    data = rng.integers(0, 2**62, 200_000).tolist()
    gap, total = _max_gap_while(lambda: sorted(data))
    assert gap > 0.5 * total

    # The kernel's push over many envs: the other thread keeps running (timing-based,
    # so a few attempts; a push that held the GIL would fail every one of them).
    ratios = []
    for _ in range(3):
        k = NStepKernel(E, 1, 0.99)
        gap, total = _max_gap_while(lambda k=k: k.push(r, te, tr))
        ratios.append(gap / total)
        if gap < 0.5 * total:
            break
    else:
        pytest.fail(f"the other thread stalled during push: max gap / push time = {ratios}")
