"""Checkpoints: everything a run needs to continue, written atomically, read without unpickling code.

A checkpoint is a ``torch.save`` file holding only tensors and plain
containers (dict, list, str, int, float, bool, None), so it loads with
``torch.load(..., weights_only=True)``: a tampered file cannot run code. It is
written to a temporary file in the same directory, flushed and fsynced, then
renamed over the old one, so a crash mid-write leaves the previous checkpoint
intact. Anything unreadable, truncated or not matching the run it is loaded
into raises ``CheckpointError`` with a one-line reason.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asynca3c.core.model import ActorCritic
from asynca3c.errors import CheckpointError

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
FORMAT = "asynca3c-checkpoint"
MODEL_FORMAT = "asynca3c-model"  # model.pt: only what playing the policy needs
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "model", "optimizer", "version", "config", "network", "counters", "rng")
MODEL_REQUIRED = ("format", "format_version", "model", "network", "env_kwargs")



def library_versions() -> dict[str, str]:
    import gymnasium

    from asynca3c._version import __version__

    versions = {"asynca3c": __version__, "torch": torch.__version__, "gymnasium": gymnasium.__version__,
                "numpy": np.__version__, "python": platform.python_version()}
    return {k: str(v) for k, v in versions.items()}  # torch's is a str subclass that weights_only refuses


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file itself, or the one inside a run directory."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def save(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (plus format tag and library versions) atomically to ``path``."""
    return _write_atomically(Path(path), {"format": FORMAT, "format_version": FORMAT_VERSION,
                                          "libraries": library_versions(), **payload})


def save_model(path: str | os.PathLike, weights: dict, network: dict, env_kwargs: dict) -> Path:
    """The policy alone (weights, network shape, env arguments): what ``load_policy`` needs to play it."""
    return _write_atomically(Path(path), {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION,
                                          "libraries": library_versions(), "model": weights,
                                          "network": network, "env_kwargs": dict(env_kwargs)})


def _write_atomically(path: Path, payload: dict) -> Path:
    """Temporary file in the same directory, fsync, rename over ``path``, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return path


def load(path: str | os.PathLike) -> dict:
    """Read a checkpoint (file or run directory) safely; ``CheckpointError`` if it is not a usable one."""
    return _read(checkpoint_path(path), {FORMAT: REQUIRED})


def _read(file: Path, formats: dict[str, tuple[str, ...]]) -> dict:
    """The payload of ``file`` if it has one of ``formats`` (format tag -> the keys it must hold)."""
    if not file.is_file():
        raise CheckpointError(f"no checkpoint at {file}: give a run directory holding {CHECKPOINT_FILE} "
                              "or a checkpoint file")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for a cut or garbled zip; all mean the same here
        lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
        reason = next((x for x in lines if x.startswith("WeightsUnpickler error")), lines[0])
        raise CheckpointError(f"{file} is not a readable checkpoint (truncated, corrupt, or not written by "
                              f"asynca3c): {reason[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        kinds = " or ".join("checkpoint" if f == FORMAT else "model file" for f in formats)
        raise CheckpointError(f"{file} is not an asynca3c {kinds}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file} has checkpoint format {payload.get('format_version')!r}; this asynca3c "
                              f"reads format {FORMAT_VERSION}")
    missing = [k for k in formats[payload["format"]] if k not in payload]
    if missing:
        raise CheckpointError(f"{file} lacks {', '.join(missing)}: it is incomplete")
    return payload


def check_matches(payload: dict, env: str, obs_dim: int, n_actions: int, hidden: tuple) -> None:
    """Refuse a checkpoint made for another environment or network shape, naming both."""
    net = payload["network"]
    mine = {"env": env, "obs_dim": obs_dim, "n_actions": n_actions, "hidden": list(hidden)}
    theirs = {k: net.get(k) for k in mine}
    theirs["hidden"] = list(theirs["hidden"] or [])
    diff = [k for k in mine if mine[k] != theirs[k]]
    if diff:
        detail = "; ".join(f"{k}: checkpoint {theirs[k]!r}, this run {mine[k]!r}" for k in diff)
        raise CheckpointError(f"the checkpoint does not match this run ({detail})")


def numpy_rng_state(rng: np.random.Generator) -> Mapping[str, Any]:
    """A generator's state as plain containers (ints may be large; fine for weights_only loading)."""
    return rng.bit_generator.state


def set_numpy_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


def load_policy(path: str | os.PathLike) -> tuple[ActorCritic, str, dict]:
    """The trained network of a run directory, a checkpoint file or a ``model.pt``, and its env.

    Returns ``(model, env_id, env_kwargs)``; the model is on the CPU in eval mode.
    """
    payload = _read(checkpoint_path(path), {FORMAT: REQUIRED, MODEL_FORMAT: MODEL_REQUIRED})
    net = payload["network"]
    env_kwargs = payload["env_kwargs"] if payload["format"] == MODEL_FORMAT else payload["config"].get("env_kwargs")
    model = ActorCritic(int(net["obs_dim"]), int(net["n_actions"]), tuple(net["hidden"]),
                        bool(net.get("continuous", False)))
    load_weights(model, payload["model"])
    return model.eval(), str(net["env"]), dict(env_kwargs or {})


def load_weights(model: ActorCritic, state: dict) -> None:
    """A checkpoint's weights into ``model``; CheckpointError (one line) when they do not fit it."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"the checkpoint's weights do not fit this network: "
                              f"{str(e).splitlines()[0]}") from None
