"""Sizes and numbers past any sane range: refused with a clear error, never a crash or an endless allocation.

Calls that crashed (segfault) or allocated until out of memory before the caps run in a subprocess, so
that a regression fails the test instead of killing pytest.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from asynca3c.checks import MAX_ENVS, MAX_KERNEL_ELEMENTS, MAX_N, check_gamma_n, check_kernel_size, ring_size
from asynca3c.config import INT_RANGES, Config, preset
from asynca3c.core._returns import NStepKernel, vtrace_into
from asynca3c.core.returns import nstep_returns, reference_nstep_returns
from asynca3c.errors import ConfigError


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- n-step kernel
def test_oversized_kernels_are_refused_in_a_subprocess():
    done = _run("""
        from asynca3c.core._returns import NStepKernel
        from asynca3c.core.returns import nstep_returns
        for args in [(1, 2**62, 0.9), (2**62, 1, 0.9), (2**40, 2**40, 0.9), (10**6, 10**6, 0.9)]:
            try:
                NStepKernel(*args)
            except ValueError as e:
                print("refused:", e)
        try:
            nstep_returns([1.0, 2.0, 3.0, 4.0], [0] * 4, [0] * 4, 0.9, 2**31)
        except ValueError as e:
            print("refused:", e)
    """)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("refused: ") for line in lines), done.stdout
    assert lines[0] == f"refused: n=4611686018427387904 is too large: n must be an integer in [1, {MAX_N}]"
    assert lines[1] == (f"refused: num_envs=4611686018427387904 is too large: num_envs must be an integer "
                        f"in [1, {MAX_ENVS}]")
    assert "num_envs=1000000 x n=1000000 is too large" in lines[3] and str(MAX_KERNEL_ELEMENTS) in lines[3]
    assert lines[4] == f"refused: n=2147483648 is too large: n must be an integer in [1, {MAX_N}]"


@pytest.mark.parametrize(("num_envs", "n", "error", "message"), [
    (0, 3, ValueError, "num_envs must be >= 1, got 0"),
    (2, -1, ValueError, "n must be >= 1, got -1"),
    (MAX_ENVS + 1, 1, ValueError, f"num_envs={MAX_ENVS + 1} is too large"),
    (1, MAX_N + 1, ValueError, f"n={MAX_N + 1} is too large"),
    (MAX_KERNEL_ELEMENTS // 128 + 1, 100, ValueError, "x n=100 is too large"),  # ring 128
    (1.0, 3, TypeError, "num_envs must be an integer"),
    (True, 3, TypeError, "num_envs must be an integer"),
    (2, "3", TypeError, "n must be an integer"),
])
def test_kernel_sizes_are_checked_before_allocating(num_envs, n, error, message):
    with pytest.raises(error, match=re.escape(message)):
        NStepKernel(num_envs, n, 0.9)
    with pytest.raises(error, match=re.escape(message)):
        check_kernel_size(num_envs, n)


def test_the_largest_allowed_kernels_are_made():
    assert ring_size(1) == 1 and ring_size(5) == 8 and ring_size(8) == 8
    assert check_kernel_size(MAX_KERNEL_ELEMENTS // 128, 100) == (MAX_KERNEL_ELEMENTS // 128, 100)  # at the cap
    k = NStepKernel(MAX_KERNEL_ELEMENTS // 1024, 5, 0.5)
    assert k.num_envs == MAX_KERNEL_ELEMENTS // 1024 and len(k.returns) == 5 * k.num_envs
    assert NStepKernel(np.int64(3), np.int32(2), 0.5).n == 2  # numpy integers are integers
    assert NStepKernel(1, MAX_N, 0.5).n == MAX_N


def test_n_above_the_cap_is_refused_and_a_long_n_gives_the_same_results():
    with pytest.raises(ValueError, match=re.escape(f"n must be an integer in [1, {MAX_N}]")):
        check_gamma_n(0.9, MAX_N + 1)
    r = np.arange(1.0, 6.0)
    z = np.zeros(5, dtype=bool)
    for f in (nstep_returns, reference_nstep_returns):
        with pytest.raises(ValueError, match="is too large"):
            f(r, z, z, 0.9, MAX_N + 1)
    got = nstep_returns(r, z, z, 0.9, MAX_N)
    want = nstep_returns(r, z, z, 0.9, 5)
    assert_array_equal(got[0], want[0])
    assert_array_equal(got[1], want[1])


def test_trajectory_returns_needs_a_fresh_kernel():
    from asynca3c.core._returns import trajectory_returns

    k = NStepKernel(1, 2, 0.9)
    k.push_one(0, 1.0)
    out = np.empty(2), np.empty(2)
    with pytest.raises(ValueError, match="needs a fresh kernel"):
        trajectory_returns(k, np.ones(2), np.zeros(2, bool), np.zeros(2, bool), *out)
    with pytest.raises(TypeError):
        none: NStepKernel | None = None
        trajectory_returns(none, np.ones(2), np.zeros(2, bool), np.zeros(2, bool), *out)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- V-trace kernel
def _vtrace_args(T=3, E=2):
    f, b = np.zeros((T, E)), np.zeros((T, E), dtype=bool)
    return dict(values=np.zeros((T + 1, E)), rewards=f, log_rhos=f.copy(), terminated=b, truncated=b.copy(),
                valid=~b, vs=np.empty((T, E)), advantages=np.empty((T, E)), carry=np.empty(E))


def _call(a):
    return vtrace_into(a["values"], a["rewards"], a["log_rhos"], a["terminated"], a["truncated"], a["valid"],
                       0.9, 1.0, 1.0, a["vs"], a["advantages"], a["carry"])


@pytest.mark.parametrize(("name", "bad", "message"), [
    ("values", np.zeros((3, 2)), "values must be a C-contiguous float64 array of shape (4, 2), got float64 (3, 2)"),
    ("values", np.zeros((4, 1)), "values must be a C-contiguous float64 array of shape (4, 2)"),
    ("rewards", np.zeros(6), "rewards must be a 2-D array [T, E]"),
    ("rewards", np.zeros((0, 2)), "rewards must be a 2-D array [T, E] with T, E >= 1"),
    ("log_rhos", np.zeros((2, 2)), "log_rhos must be a C-contiguous float64 array of shape (3, 2)"),
    ("log_rhos", np.zeros((2, 3)).T, "log_rhos must be a C-contiguous float64"),
    ("terminated", np.zeros((3, 1), bool), "terminated must be a C-contiguous bool array of shape (3, 2)"),
    ("truncated", np.zeros((3, 2)), "truncated must be a C-contiguous bool array"),
    ("valid", np.ones((2, 2), bool), "valid must be a C-contiguous bool array of shape (3, 2)"),
    ("vs", np.empty((2, 2)), "vs must be a C-contiguous writeable float64 array of shape (3, 2)"),
    ("advantages", np.empty((3, 2), np.float32), "advantages must be a C-contiguous writeable float64"),
    ("carry", np.empty(1), "carry must be a C-contiguous writeable float64 array of shape (2,)"),
])
def test_vtrace_into_checks_every_shape(name, bad, message):
    a = _vtrace_args()
    a[name] = bad
    with pytest.raises(ValueError, match=re.escape(message)):
        _call(a)


def test_vtrace_into_refuses_read_only_outputs_and_none():
    a = _vtrace_args()
    a["vs"].flags.writeable = False
    with pytest.raises(ValueError, match="vs must be a C-contiguous writeable"):
        _call(a)
    a = _vtrace_args()
    a["valid"] = None
    with pytest.raises(TypeError):
        _call(a)
    a = _vtrace_args()
    assert _call(a) == (0, 0)


def test_mismatched_vtrace_inputs_never_crash_in_a_subprocess():
    done = _run("""
        import numpy as np
        from asynca3c.core._returns import vtrace_into
        from asynca3c.core.vtrace import vtrace
        T, E = 50, 40
        small, big = np.zeros((1, 1)), np.zeros((T, E))
        flags = np.zeros((T, E), bool)
        for args in [
            (small, big, big, flags, flags, flags, 0.9, 1.0, 1.0, big.copy(), big.copy(), np.zeros(E)),
            (np.zeros((T + 1, E)), big, small, flags, flags, flags, 0.9, 1.0, 1.0, big.copy(), big.copy(),
             np.zeros(E)),
            (np.zeros((T + 1, E)), big, big, flags, flags, flags, 0.9, 1.0, 1.0, small, small, np.zeros(1)),
            (np.zeros((T + 1, E)), np.zeros(T), big, flags, flags, flags, 0.9, 1.0, 1.0, big, big, np.zeros(E)),
        ]:
            try:
                vtrace_into(*args)
            except ValueError as e:
                print("refused:", e)
        for kw in [dict(values=np.zeros((T, E))), dict(terminated=np.zeros((T, 1), bool)),
                   dict(valid=np.zeros((1, E), bool)), dict(log_rhos=np.zeros((T + 1, E)))]:
            args = dict(values=np.zeros((T + 1, E)), rewards=big, log_rhos=big, terminated=flags,
                        truncated=flags, valid=None)
            try:
                vtrace(**{**args, **kw}, gamma=0.9)
            except ValueError as e:
                print("refused:", e)
    """)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 8 and all(line.startswith("refused: ") for line in lines), done.stdout


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("change", "message"), [
    (dict(n_step=2**62), "n_step=4611686018427387904 is not allowed: an integer in [1, 1000000]"),
    (dict(agents=2000), "agents=2000 is not allowed: an integer in [1, 1024]"),
    (dict(hidden=(100_000,)), "hidden=(100000,) is not allowed: 1 to 64 integers in [1, 65536]"),
    (dict(hidden=(32_768, 32_768)), "hidden=(32768, 32768) is not allowed: widths whose neighbours' products"),
    (dict(segment_length=20_000), "segment_length=20000 is not allowed: an integer in [1, 10000]"),
    (dict(epochs=True), "epochs=True is not allowed: an integer >= 1"),
    (dict(steps=False), "steps=False is not allowed: an integer >= 0"),
    (dict(max_env_faults_per_minute=-1), "max_env_faults_per_minute=-1 is not allowed: an integer >= 0"),
    (dict(eval_max_episode_steps=0), "eval_max_episode_steps=0 is not allowed: an integer >= 1"),
    (dict(max_learner_restarts=10**9), "max_learner_restarts=1000000000 is not allowed: an integer in [0, 10000]"),
    (dict(seed=2**32), "seed=4294967296 is not allowed: an integer in [0, 4294967295]"),
    (dict(seed=1.0), "seed=1.0 is not allowed: an integer in [0, 4294967295]"),
    (dict(lr=2.0), "lr=2.0 is not allowed: a number in (0, 1]"),
    (dict(lr=0.0), "lr=0.0 is not allowed: a number > 0"),
    (dict(rmsprop_eps=float("inf")), "rmsprop_eps=inf is not allowed: a number in (0, 1]"),
    (dict(max_grad_norm=float("nan")), "max_grad_norm=nan is not allowed: a number in [0, 1e6]"),
    (dict(seconds=float("inf")), "seconds=inf is not allowed: a number in [0, 1e9]"),
    (dict(save_every=-1.0), "save_every=-1.0 is not allowed: a number >= 0"),
    (dict(log_interval=float("nan")), "log_interval=nan is not allowed: a number in (0, 1e9]"),
    (dict(env_step_timeout=-0.5), "env_step_timeout=-0.5 is not allowed: a number >= 0"),
    (dict(reward_threshold=float("-inf")), "reward_threshold=-inf is not allowed: a finite number"),
    (dict(env_faults="never"), "env_faults='never' is not allowed: auto, fail or restart"),
    (dict(env_kwargs={"max_episode_steps": 0}), "env_kwargs={'max_episode_steps': 0} is not allowed: "
                                                "max_episode_steps must be an integer in [1, 1000000000] (or absent)"),
    (dict(env_kwargs={"max_episode_steps": True}), "max_episode_steps must be an integer"),
])
def test_settings_beyond_their_range_are_refused(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(**change)


@pytest.mark.parametrize(("change", "message"), [
    (dict(agents=1_000, envs_per_agent=1_001),
     "envs_per_agent=1001 is not allowed: an integer in [1, 1000] with agents=1000 (agents x envs_per_agent "
     "<= 1000000)"),
    (dict(segment_length=10_000, batch_envs=1_001),
     "batch_envs=1001 is not allowed: an integer in [1, 1000] with segment_length=10000"),
    (dict(segment_length=1_000, agents=1, envs_per_agent=20_000, batch_envs=64),
     "segment_length=1000 is not allowed: an integer in [1, 500] with 20000 environments in an agent"),
    (dict(algorithm="nstep", n_step=600_000, envs_per_agent=128),
     "n_step=600000 is not allowed: an integer in [1, 524288] with 128 environments in an agent"),
    (dict(algorithm="nstep", n_step=1_000, envs_per_agent=1, eval_envs=100_000),
     "n_step=1000 is not allowed: an integer in [1, 512] with 100000 environments in an agent"),
])
def test_products_that_allocate_are_capped(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(**change)


def test_values_at_the_caps_are_allowed():
    Config(agents=1_000, envs_per_agent=1_000, batch_envs=1_000, segment_length=10_000, minibatches=1_000)
    Config(algorithm="nstep", n_step=524_288, envs_per_agent=128)
    Config(lr=1.0, seed=2**32 - 1, reward_threshold=float("nan"), seconds=0, env_step_timeout=0.0,
           env_kwargs={"max_episode_steps": 1}, hidden=(16_384, 16_384), torch_threads=0)
    for name in ("default", "seed", "nstep"):
        preset(name)
    assert all(0 <= low < high for low, high in INT_RANGES.values())
