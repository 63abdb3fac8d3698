"""V-trace targets: the compiled kernel against its Python twin, the direct formula, the n-step return
it reduces to when pi = mu, long segments, and refused input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import asynca3c.core._returns as compiled
from asynca3c.core import vtrace as vtrace_mod
from asynca3c.core.returns import nstep_returns
from asynca3c.core.vtrace import reference_vtrace, vtrace

HYPO = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def segments(rng: np.random.Generator, T: int, E: int, end_prob: float = 0.1, autoreset: bool = True) -> dict:
    """Random segments laid out as a NEXT_STEP vector env makes them: an episode end is followed by an
    invalid (autoreset) step."""
    term = np.zeros((T, E), bool)
    trunc = np.zeros((T, E), bool)
    valid = np.ones((T, E), bool)
    for e in range(E):
        t = 0
        while t < T:
            if autoreset and t > 0 and (term[t - 1, e] or trunc[t - 1, e]):
                valid[t, e] = False
            elif rng.random() < end_prob:
                (term if rng.random() < 0.6 else trunc)[t, e] = True
            t += 1
    return dict(values=rng.normal(0, 3, (T + 1, E)), rewards=rng.normal(0, 1, (T, E)),
                log_rhos=rng.normal(0, 0.7, (T, E)), terminated=term, truncated=trunc, valid=valid)


def direct(seg: dict, gamma: float, rho_bar: float, c_bar: float):
    """The definition written out: vs_t = V_t + sum_s (prod_{i<s} gamma c_i) delta_s over the rest of the
    episode inside the segment; adv_t = rho_t (r_t + gamma_t next_t - V_t). O(T^2) per env."""
    v, r, lr = seg["values"], seg["rewards"], seg["log_rhos"]
    te, tr, ok = seg["terminated"], seg["truncated"], seg["valid"]
    T, E = r.shape
    ratio = np.exp(lr)
    rho, c = np.minimum(rho_bar, ratio), np.minimum(c_bar, ratio)
    disc = np.where(te, 0.0, gamma)
    delta = rho * (r + disc * v[1:] - v[:-1])
    vs, adv = v[:-1].copy(), np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            if not ok[t, e]:
                continue
            total, weight, s = 0.0, 1.0, t
            while True:
                total += weight * delta[s, e]
                if te[s, e] or tr[s, e] or s == T - 1:
                    break
                weight *= gamma * c[s, e]
                s += 1
            vs[t, e] = v[t, e] + total
        for t in range(T):
            if not ok[t, e]:
                continue
            goes_on = not (te[t, e] or tr[t, e]) and t < T - 1
            nxt = vs[t + 1, e] if goes_on else v[t + 1, e]
            adv[t, e] = rho[t, e] * (r[t, e] + disc[t, e] * nxt - v[t, e])
    return vs, adv


SHAPES = st.tuples(st.integers(1, 24), st.integers(1, 6))
GAMMAS = st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0])
BARS = st.sampled_from([0.5, 1.0, 2.0, 1e9])


@HYPO
@given(shape=SHAPES, seed=st.integers(0, 2**32 - 1), gamma=GAMMAS, rho_bar=BARS, c_bar=BARS,
       end_prob=st.sampled_from([0.0, 0.1, 0.5]))
def test_kernel_matches_the_twin_and_the_direct_formula(shape, seed, gamma, rho_bar, c_bar, end_prob):
    seg = segments(np.random.default_rng(seed), *shape, end_prob=end_prob)
    got = vtrace(**seg, gamma=gamma, rho_bar=rho_bar, c_bar=c_bar)
    twin = reference_vtrace(**seg, gamma=gamma, rho_bar=rho_bar, c_bar=c_bar)
    vs, adv = direct(seg, gamma, rho_bar, c_bar)
    assert_allclose(got.vs, twin.vs, rtol=1e-13, atol=1e-12)
    assert_allclose(got.advantages, twin.advantages, rtol=1e-13, atol=1e-12)
    assert_allclose(got.vs, vs, rtol=1e-12, atol=1e-10)
    assert_allclose(got.advantages, adv, rtol=1e-12, atol=1e-10)


@HYPO
@given(shape=SHAPES, seed=st.integers(0, 2**32 - 1), gamma=GAMMAS)
def test_on_policy_it_is_the_n_step_return_to_the_segment_end(shape, seed, gamma):
    """pi = mu: vs_t is the return up to the episode's or the segment's end, bootstrapped like A3C's."""
    T, E = shape
    seg = segments(np.random.default_rng(seed), T, E, end_prob=0.15, autoreset=False)
    seg["log_rhos"] = np.zeros((T, E))
    got = vtrace(**seg, gamma=gamma)
    for e in range(E):
        te, tr = seg["terminated"][:, e], seg["truncated"][:, e]
        ret, disc = nstep_returns(seg["rewards"][:, e], te, tr, gamma, T)
        for t in range(T):
            k = next(s for s in range(t, T) if te[s] or tr[s] or s == T - 1) - t + 1
            expected = ret[t] + disc[t] * seg["values"][t + k, e]
            assert got.vs[t, e] == pytest.approx(expected, rel=1e-12, abs=1e-10)
    # ...and the advantage is the target minus the value, as in A3C
    assert_allclose(got.advantages, got.vs - seg["values"][:-1], rtol=1e-12, atol=1e-10)


def test_autoreset_steps_have_no_target_and_cut_the_trace():
    v = np.array([[1.0], [2.0], [3.0], [4.0]])
    r = np.array([[1.0], [5.0], [1.0]])
    out = vtrace(v, r, np.zeros((3, 1)), terminated=[[True], [False], [False]], truncated=np.zeros((3, 1), bool),
                 valid=[[True], [False], [True]], gamma=0.5)
    assert out.vs[0, 0] == 1.0 and out.advantages[0, 0] == 0.0  # terminated: r - V = 1 - 1
    assert out.vs[1, 0] == 2.0 and out.advantages[1, 0] == 0.0  # the autoreset step: nothing
    assert out.vs[2, 0] == 1.0 + 0.5 * 4.0  # bootstraps from the last row


def test_truncation_bootstraps_from_the_final_observation_and_stops_the_trace():
    v = np.array([[0.0], [10.0], [100.0]])
    out = vtrace(v, [[1.0], [1.0]], np.zeros((2, 1)), terminated=np.zeros((2, 1), bool),
                 truncated=[[True], [False]], gamma=0.9)
    assert out.vs[0, 0] == pytest.approx(1.0 + 0.9 * 10.0)  # not 1 + 0.9 * vs_1
    assert out.vs[1, 0] == pytest.approx(1.0 + 0.9 * 100.0)


def test_importance_weights_are_truncated():
    v = np.zeros((2, 1))
    big = vtrace(v, [[1.0]], [[5.0]], [[True]], [[False]], gamma=0.9, rho_bar=2.0)
    assert big.advantages[0, 0] == pytest.approx(2.0) and big.vs[0, 0] == pytest.approx(2.0)
    small = vtrace(v, [[1.0]], [[np.log(0.25)]], [[True]], [[False]], gamma=0.9, rho_bar=2.0)
    assert small.vs[0, 0] == pytest.approx(0.25)


def test_exact_on_long_segments():
    """The backward recursion only multiplies by gamma * c <= 1: no error growth over 200k steps."""
    rng = np.random.default_rng(7)
    T, gamma = 200_000, 0.9999
    r = rng.uniform(-1, 1, (T, 1))
    lr = rng.normal(0, 0.3, (T, 1))
    v = rng.normal(0, 1, (T + 1, 1))
    got = vtrace(v, r, lr, np.zeros((T, 1), bool), np.zeros((T, 1), bool), gamma=gamma)
    # the same recursion in extended precision
    ratio = np.exp(lr[:, 0].astype(np.longdouble))
    rho = np.minimum(1, ratio)
    g = np.longdouble(gamma)
    vl, rl = v[:, 0].astype(np.longdouble), r[:, 0].astype(np.longdouble)
    acc, vs = np.longdouble(0), np.empty(T, dtype=np.longdouble)
    for t in range(T - 1, -1, -1):
        acc = rho[t] * (rl[t] + g * vl[t + 1] - vl[t]) + g * rho[t] * acc
        vs[t] = vl[t] + acc
    err = np.abs(got.vs[:, 0] - vs.astype(np.float64)).max()
    assert err < 1e-10 * max(1.0, float(np.abs(vs).max()))


def test_the_compiled_kernel_is_the_one_in_use():
    assert vtrace_mod.vtrace_into is compiled.vtrace_into
    assert compiled.__file__.endswith((".so", ".pyd"))


@pytest.mark.parametrize(("change", "error", "message"), [
    (dict(values=np.zeros((2, 2))), ValueError, r"values must have shape \(3, 2\), got \(2, 2\)"),
    (dict(rewards=np.zeros(2)), ValueError, "rewards must be a 2-D array"),
    (dict(rewards=np.array([[0.0, np.nan], [0.0, 0.0]])), ValueError, r"rewards must be finite, got nan at \[0, 1\]"),
    (dict(values=np.array([[0.0, 0.0], [0.0, 0.0], [np.inf, 0.0]])), ValueError,
     r"values must be finite, got inf at \[2, 0\]"),
    (dict(log_rhos=np.full((2, 2), np.inf)), ValueError, "log_rhos must be finite"),
    (dict(terminated=np.full((2, 2), 2)), ValueError, "terminated must hold only 0 or 1"),
    (dict(truncated=np.zeros((2, 2), np.float32)), TypeError, "truncated must be bool"),
    (dict(valid=np.ones((1, 2), bool)), ValueError, r"valid must have shape \(2, 2\)"),
    (dict(values=np.zeros((3, 2), complex)), TypeError, "values must be float64"),
    (dict(gamma=1.5), ValueError, r"gamma must be in \[0, 1\], got 1.5"),
    (dict(rho_bar=0.0), ValueError, "rho_bar must be a finite number > 0, got 0.0"),
    (dict(c_bar=float("nan")), ValueError, "c_bar must be a finite number > 0"),
    (dict(gamma="0.9"), TypeError, "gamma must be a number"),
])
def test_bad_input_is_refused_in_one_line(change, error, message):
    args = dict(values=np.zeros((3, 2)), rewards=np.zeros((2, 2)), log_rhos=np.zeros((2, 2)),
                terminated=np.zeros((2, 2), bool), truncated=np.zeros((2, 2), bool), gamma=0.9)
    args.update(change)
    for fn in (vtrace, reference_vtrace):
        with pytest.raises(error, match=message) as info:
            fn(**args)
        assert "\n" not in str(info.value)
