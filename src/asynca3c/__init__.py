"""asynca3c: asynchronous advantage actor-critic on asyncio, torch and a Cython kernel."""

from asynca3c.config import Config, ConfigError
from asynca3c.envs import EnvError
from asynca3c.evaluation import EvalResult, evaluate
from asynca3c.returns import NStepKernel, nstep_returns
from asynca3c.trainer import Trainer, TrainResult, train

__all__ = ["Config", "ConfigError", "EnvError", "EvalResult", "NStepKernel", "TrainResult", "Trainer", "evaluate",
           "nstep_returns", "train"]
__version__ = "0.1.0"
