"""asynca3c: asynchronous advantage actor-critic on asyncio, torch and a Cython kernel."""

from asynca3c.returns import NStepKernel, nstep_returns

__all__ = ["NStepKernel", "nstep_returns"]
__version__ = "0.1.0"
