"""Type stub for the compiled return kernels (see _returns.pyx)."""

from typing import SupportsIndex

import numpy as np
import numpy.typing as npt

def as_float_array(x: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]: ...
def as_flag_array(x: npt.ArrayLike, name: str) -> npt.NDArray[np.bool_]: ...

class NStepKernel:
    num_envs: int
    n: int
    gamma: float
    env: npt.NDArray[np.int64]
    start: npt.NDArray[np.int64]
    boot: npt.NDArray[np.int64]
    returns: npt.NDArray[np.float64]
    discounts: npt.NDArray[np.float64]
    steps: npt.NDArray[np.int64]
    # num_envs <= MAX_ENVS, n <= MAX_N, num_envs x ring(n) <= MAX_KERNEL_ELEMENTS (asynca3c.checks), else ValueError
    def __init__(self, num_envs: SupportsIndex, n: SupportsIndex, gamma: float) -> None: ...
    @property
    def pending(self) -> npt.NDArray[np.intp]: ...
    def push(
        self,
        rewards: npt.NDArray[np.float64],
        terminated: npt.NDArray[np.bool_],
        truncated: npt.NDArray[np.bool_],
        mask: npt.NDArray[np.bool_] | None = None,
    ) -> int: ...
    def drop(self, env: int) -> None: ...
    def push_one(
        self, env: int, reward: float, terminated: bool = False, truncated: bool = False
    ) -> int: ...

def trajectory_returns(
    kernel: NStepKernel,
    rewards: npt.NDArray[np.float64],
    terminated: npt.NDArray[np.bool_],
    truncated: npt.NDArray[np.bool_],
    returns: npt.NDArray[np.float64],
    discounts: npt.NDArray[np.float64],
) -> None: ...

def vtrace_into(
    values: npt.NDArray[np.float64],
    rewards: npt.NDArray[np.float64],
    log_rhos: npt.NDArray[np.float64],
    terminated: npt.NDArray[np.bool_],
    truncated: npt.NDArray[np.bool_],
    valid: npt.NDArray[np.bool_],
    gamma: float,
    rho_bar: float,
    c_bar: float,
    vs: npt.NDArray[np.float64],
    advantages: npt.NDArray[np.float64],
    carry: npt.NDArray[np.float64],
) -> tuple[int, int]: ...
