"""Argument checks shared by the settings and the return kernels.

Here, below both, so that validating a Config never imports the compiled kernel
or anything of the core.
"""

from __future__ import annotations

import operator

import numpy as np

#: Largest n of an n-step return (the kernel keeps n rewards and n samples per environment).
MAX_N = 1_000_000
#: Most environments one n-step kernel serves.
MAX_ENVS = 1_000_000
#: Most ring elements (num_envs x n rounded up to a power of two) one n-step kernel allocates.
MAX_KERNEL_ELEMENTS = 2**26


def ring_size(n: int) -> int:
    """The kernel's ring length for n: the smallest power of two >= n."""
    return 1 << max(int(n) - 1, 0).bit_length()


def check_gamma_n(gamma: float, n: int) -> None:
    """Raise a clear error unless 0 <= gamma <= 1 and n is an integer in [1, MAX_N]."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.floating, np.integer)):
        raise TypeError(f"gamma must be a number in [0, 1], got {gamma!r}")
    if not (0.0 <= float(gamma) <= 1.0):  # also refuses NaN
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer >= 1, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > MAX_N:
        raise ValueError(f"n={n} is too large: n must be an integer in [1, {MAX_N}]")


def check_kernel_size(num_envs, n) -> tuple[int, int]:
    """(num_envs, n) as ints when an n-step kernel of that size may be made; else TypeError/ValueError."""
    values = []
    for name, x, cap in (("num_envs", num_envs, MAX_ENVS), ("n", n, MAX_N)):
        if isinstance(x, bool):
            raise TypeError(f"{name} must be an integer in [1, {cap}], got {x!r}")
        try:
            x = operator.index(x)
        except TypeError:
            raise TypeError(f"{name} must be an integer in [1, {cap}], got {x!r}") from None
        if x < 1:
            raise ValueError(f"{name} must be >= 1, got {x}")
        if x > cap:
            raise ValueError(f"{name}={x} is too large: {name} must be an integer in [1, {cap}]")
        values.append(x)
    num_envs, n = values
    if num_envs * ring_size(n) > MAX_KERNEL_ELEMENTS:  # Python integers: no overflow
        raise ValueError(f"num_envs={num_envs} x n={n} is too large: num_envs times n rounded up to a power "
                         f"of two ({ring_size(n)}) must be at most {MAX_KERNEL_ELEMENTS}")
    return num_envs, n
