"""Every error asynca3c raises on purpose, under one base class.

A host catches ``Asynca3cError`` to handle anything the library refused or
lost; each subclass also keeps the built-in base its callers already catch
(``ValueError`` for bad input, ``RuntimeError`` for a run that cannot go on).
Torch-free and import-free, so every layer and the CLI can import it cheaply.
"""

from __future__ import annotations

__all__ = ["Asynca3cError", "CheckpointError", "ConfigError", "CurveError", "EnvError", "EnvFault", "LearnerError",
           "RunDirError", "ShardError", "TrainerClosed", "VideoError"]


class Asynca3cError(Exception):
    """Base of every error asynca3c raises on purpose."""


class ConfigError(Asynca3cError, ValueError):
    """A setting a user gave is not allowed; the message names it."""


class EnvError(Asynca3cError, ValueError):
    """An environment id, its arguments or its spaces are not usable; the message says why."""


class CheckpointError(Asynca3cError, ValueError):
    """A checkpoint that cannot be used: missing, corrupt, truncated, or for another env or network."""


class CurveError(Asynca3cError, ValueError):
    """A run directory without a usable progress file, or nothing to draw."""


class VideoError(Asynca3cError, ValueError):
    """A video that cannot be made: unknown format, missing packages, an env that does not render."""


class RunDirError(Asynca3cError, ValueError):
    """A run directory that cannot be used: a file, under a file, not writable, or another run's."""


class LearnerError(Asynca3cError, RuntimeError):
    """The learner could not go on: its process died too often, or its numbers stayed non-finite."""


class ShardError(Asynca3cError, RuntimeError):
    """An acting shard could not go on: it did not start, or its process died too often."""


class EnvFault(Asynca3cError, RuntimeError):
    """An environment failed during a run (raised, hung, returned non-finite or misshaped numbers) and the
    fault policy says to stop; the message names the env, the fault and the step."""


class TrainerClosed(Asynca3cError, RuntimeError):
    """The trainer is not running: not started yet, or already closed."""
