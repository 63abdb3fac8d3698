"""asynca3c: asynchronous advantage actor-critic on asyncio, torch and a Cython kernel.

Public names resolve lazily (PEP 562): ``import asynca3c`` costs nothing, and
``from asynca3c import Trainer`` imports torch and the loop side only then, so
the CLI's help, the learner worker and tooling import just what they use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from asynca3c._version import __version__

#: public name -> the module that defines it
_EXPORTS = {
    "Config": "asynca3c.config",
    "preset": "asynca3c.config",
    "Asynca3cError": "asynca3c.errors",
    "CheckpointError": "asynca3c.errors",
    "ConfigError": "asynca3c.errors",
    "CurveError": "asynca3c.errors",
    "EnvError": "asynca3c.errors",
    "EnvFault": "asynca3c.errors",
    "LearnerError": "asynca3c.errors",
    "RunDirError": "asynca3c.errors",
    "ShardError": "asynca3c.errors",
    "TrainerClosed": "asynca3c.errors",
    "VideoError": "asynca3c.errors",
    "NStepKernel": "asynca3c.core.returns",
    "nstep_returns": "asynca3c.core.returns",
    "vtrace": "asynca3c.core.vtrace",
    "EvalResult": "asynca3c.core.evaluation",
    "evaluate": "asynca3c.core.evaluation",
    "MetricsRow": "asynca3c.core.messages",
    "TrainResult": "asynca3c.runtime.run",
    "Trainer": "asynca3c.runtime.trainer",
    "train": "asynca3c.runtime.trainer",
}

__all__ = [
    "Asynca3cError", "CheckpointError", "Config", "ConfigError", "CurveError", "EnvError", "EnvFault", "EvalResult",
    "LearnerError", "MetricsRow", "NStepKernel", "RunDirError", "ShardError", "TrainResult", "Trainer", "TrainerClosed",
    "VideoError", "__version__", "evaluate", "nstep_returns", "preset", "train", "vtrace",
]

if TYPE_CHECKING:
    from asynca3c.config import Config, preset
    from asynca3c.core.evaluation import EvalResult, evaluate
    from asynca3c.core.messages import MetricsRow
    from asynca3c.core.returns import NStepKernel, nstep_returns
    from asynca3c.core.vtrace import vtrace
    from asynca3c.errors import (
        Asynca3cError,
        CheckpointError,
        ConfigError,
        CurveError,
        EnvError,
        EnvFault,
        LearnerError,
        RunDirError,
        ShardError,
        TrainerClosed,
        VideoError,
    )
    from asynca3c.runtime.run import TrainResult
    from asynca3c.runtime.trainer import Trainer, train


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'asynca3c' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
