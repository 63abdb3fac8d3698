"""Argument checks shared by the settings and the return kernels.

Here, below both, so that validating a Config never imports the compiled kernel
or anything of the core.
"""

from __future__ import annotations

import numpy as np


def check_gamma_n(gamma: float, n: int) -> None:
    """Raise a clear error unless 0 <= gamma <= 1 and n is an integer >= 1."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.floating, np.integer)):
        raise TypeError(f"gamma must be a number in [0, 1], got {gamma!r}")
    if not (0.0 <= float(gamma) <= 1.0):  # also refuses NaN
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer >= 1, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
