"""Checkpoints: everything a run needs to continue, written atomically, read without unpickling code.

A checkpoint is a ``torch.save`` file holding only tensors and plain
containers (dict, list, str, int, float, bool, None), so it loads with
``torch.load(..., weights_only=True)``: a tampered file cannot run code. It is
written to a temporary file in the same directory, flushed and fsynced, then
renamed over the old one, so a crash mid-write leaves the previous checkpoint
intact. Anything unreadable, truncated, holding code, or not matching the run
it is loaded into raises ``CheckpointError`` with a one-line reason; every
entry is checked at load, so a tampered value is named there, not met mid-run.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import platform
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asynca3c.config import ENV_WRAPPERS, INT_RANGES, Config
from asynca3c.core.model import CORES, ENCODERS, ActorCritic, build_network
from asynca3c.errors import CheckpointError, ConfigError

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
    return write_atomically(path, _serialize({"format": FORMAT, "format_version": FORMAT_VERSION,
                                              "libraries": library_versions(), **payload}))


def save_model(path: str | os.PathLike, weights: dict, network: dict, env_kwargs: dict) -> Path:
    """The policy alone (weights, network shape, env arguments): what ``load_policy`` needs to play it."""
    return write_atomically(path, _serialize({"format": MODEL_FORMAT, "format_version": FORMAT_VERSION,
                                              "libraries": library_versions(), "model": weights,
                                              "network": network, "env_kwargs": dict(env_kwargs)}))


def _serialize(payload: dict) -> bytes:
    """In memory first, so a failing disk shows up as a plain OSError of the write, not inside torch."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_atomically(path: str | os.PathLike, data: bytes | str) -> Path:
    """``data`` (str: UTF-8) to ``path`` so that a crash or a full disk leaves the old file whole.

    A temporary file in the same directory is written, fsynced and renamed over ``path``, then the
    directory is fsynced (so the rename survives a power cut). Temporaries a killed earlier save of
    ``path`` left behind are removed first. An ``OSError`` keeps its errno and says, on one line, which
    file could not be written; no temporary is left.
    """
    path = Path(path)
    data = data.encode() if isinstance(data, str) else data
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise OSError(e.errno, f"could not write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete the ``.{name}.XXXXXXXX.tmp`` files that saves of ``path`` killed mid-write left behind."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    for entry in os.listdir(path.parent):
        if pattern.fullmatch(entry):
            (path.parent / entry).unlink(missing_ok=True)


def load(path: str | os.PathLike) -> dict:
    """Read a checkpoint (file or run directory) safely; ``CheckpointError`` if it is not a usable one."""
    return _read(checkpoint_path(path), {FORMAT: REQUIRED})


def _read(file: Path, formats: dict[str, tuple[str, ...]]) -> dict:
    """The payload of ``file`` if it has one of ``formats`` (format tag -> the keys it must hold), each
    entry checked so that a tampered value is refused here, by name, not deep inside a run."""
    if not file.is_file():
        raise CheckpointError(f"no checkpoint at {file}: give a run directory holding {CHECKPOINT_FILE} "
                              "or a checkpoint file")
    payload = _unpickle(file)
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        kinds = " or ".join("checkpoint" if f == FORMAT else "model file" for f in formats)
        raise CheckpointError(f"{file} is not an asynca3c {kinds}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file} has checkpoint format {payload.get('format_version')!r}; this asynca3c "
                              f"reads format {FORMAT_VERSION}")
    missing = [k for k in formats[payload["format"]] if k not in payload]
    if missing:
        raise CheckpointError(f"{file} lacks {', '.join(missing)}: it is incomplete")
    for entry, check in _entry_checks(payload):
        try:
            check()
        except _Invalid as e:
            raise CheckpointError(f"{file} has an unusable '{entry}' entry: {e}") from None
    return payload


_ZIP_MAGIC = b"PK\x03\x04"
#: Pickle opcodes that import or call something: a file holding them carries code.
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}
#: What torch's weights-only unpickler says when it meets a global, a call or an object it refuses.
_CODE_REFUSAL = re.compile(r"GLOBAL |unrecognized function|Can only (create new object|build)")


def _refused_code(file: Path) -> CheckpointError:
    return CheckpointError(f"{file} was refused: it holds Python code or objects beyond tensors and plain "
                           "containers, which asynca3c never writes (a tampered or foreign file)")


def _unreadable(file: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{file} is not a readable checkpoint (truncated, corrupt, or not written by "
                           f"asynca3c): {reason[:200]}")


def _unpickle(file: Path) -> object:
    """The file's object, loaded by torch's weights-only unpickler (never running code), without the
    warnings and the advice to turn that safety off that torch would print."""
    with file.open("rb") as f:
        head = f.read(4)
        if head != _ZIP_MAGIC:  # asynca3c always writes torch's zip format: look, never load
            f.seek(0)
            try:
                ops = {op.name for op, _, _ in pickletools.genops(f)}
            except Exception:
                raise _unreadable(file, "not a torch zip archive") from None
            raise (_refused_code(file) if ops & _CODE_OPCODES else _unreadable(file, "not a torch zip archive"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if _CODE_REFUSAL.search(str(e)):
            raise _refused_code(file) from None
        raise _unreadable(file, _torch_reason(e)) from None
    except Exception as e:  # torch raises several kinds for a cut or garbled zip; all mean the same here
        raise _unreadable(file, _torch_reason(e)) from None


def _torch_reason(e: Exception) -> str:
    """The line of torch's message that says what is wrong, without its advice (which would turn the
    safety off)."""
    advice = ("weights_only", "Weights only", "Please ", "Check the documentation")
    lines = [x.strip() for x in str(e).splitlines() if x.strip() and not any(a in x for a in advice)]
    return lines[0] if lines else type(e).__name__


class _Invalid(Exception):
    """One entry's problem; ``_read`` names the entry and the file."""


def _entry_checks(p: dict) -> list[tuple[str, Callable[[], object]]]:
    """(entry, its check) in the order that lets later checks rely on earlier ones."""
    if p["format"] == MODEL_FORMAT:
        return [("network", lambda: _check_network(p["network"])),
                ("env_kwargs", lambda: _check_env_kwargs(p["env_kwargs"])),
                ("model", lambda: _check_model(p["model"], p["network"]))]
    checks: list[tuple[str, Callable[[], object]]] = [("network", lambda: _check_network(p["network"])),
              ("version", lambda: _check_version(p["version"])),
              ("counters", lambda: _check_counters(p["counters"])),
              ("config", lambda: _check_config(p["config"])),
              ("rng", lambda: _check_rng(p["rng"])),
              ("model", lambda: _check_model(p["model"], p["network"])),
              ("optimizer", lambda: _check_optimizer(p["optimizer"], p["network"], _check_config(p["config"])))]
    if "novelty_counts" in p:
        checks.append(("novelty_counts", lambda: _check_novelty_counts(p["novelty_counts"])))
    return checks


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_version(version: object) -> None:
    if not _is_int(version, 0):
        raise _Invalid(f"must be an int >= 0, not {_short(version)}")


#: Progress.state()'s counters: the counts, and the real numbers that cannot be negative.
_COUNTS = ("env_steps", "episodes", "updates", "samples_trained", "eval_episodes")
_AMOUNTS = ("seconds", "lag_sum")
#: Counters added after the first checkpoints were written.
_LATER_COUNTS = ("nonfinite_steps", "env_faults", "learner_restarts", "shard_restarts")


def _check_counters(counters: object) -> None:
    if not isinstance(counters, dict):
        raise _Invalid(f"must be a dict, not {type(counters).__name__}")
    missing = [k for k in (*_COUNTS, *_AMOUNTS, "solved_after_steps", "solved_after_seconds", "train_returns",
                           "eval_returns") if k not in counters]
    if missing:
        raise _Invalid(f"lacks {', '.join(missing)}")
    for key in (*_COUNTS, *_LATER_COUNTS, "solved_after_steps"):
        value = counters.get(key, 0)  # older checkpoints lack the later counts
        if not (_is_int(value, 0) or (value is None and key == "solved_after_steps")):
            raise _Invalid(f"{key} must be an int >= 0, not {_short(value)}")
    for key in (*_AMOUNTS, "solved_after_seconds"):
        value = counters[key]
        if not ((_is_real(value) and value >= 0) or (value is None and key == "solved_after_seconds")):
            raise _Invalid(f"{key} must be a finite number >= 0, not {_short(value)}")
    for key in ("train_returns", "eval_returns"):
        value = counters[key]
        if not isinstance(value, list) or not all(_is_real(x) for x in value):
            raise _Invalid(f"{key} must be a list of finite numbers, not {_short(value)}")


def _check_network(net: object) -> None:
    if not isinstance(net, dict):
        raise _Invalid(f"must be a dict, not {type(net).__name__}")
    if not (isinstance(net.get("env"), str) and net["env"]):
        raise _Invalid(f"env must be a non-empty str, not {_short(net.get('env'))}")
    for key in ("obs_dim", "n_actions"):
        if not _is_int(net.get(key), 1):
            raise _Invalid(f"{key} must be an int >= 1, not {_short(net.get(key))}")
    hidden = net.get("hidden")
    if not (isinstance(hidden, (list, tuple)) and hidden and all(_is_int(h, 1) for h in hidden)):
        raise _Invalid(f"hidden must be a non-empty list of ints >= 1, not {_short(hidden)}")
    if net.get("env_wrapper", "") not in ("", *ENV_WRAPPERS):
        raise _Invalid(f"env_wrapper must be one of {('', *ENV_WRAPPERS)}, not {_short(net['env_wrapper'])}")
    for key in ("continuous", "running_norm", "separate_value"):
        if not isinstance(net.get(key, False), bool):
            raise _Invalid(f"{key} must be a bool, not {_short(net[key])}")
    if net.get("encoder", "mlp") not in ENCODERS:
        raise _Invalid(f"encoder must be one of {ENCODERS}, not {_short(net['encoder'])}")
    shape = net.get("obs_shape") or []
    if net.get("encoder", "mlp") != "mlp" and not (
            isinstance(shape, (list, tuple)) and len(shape) == 3 and all(_is_int(x, 1) for x in shape)
            and math.prod(shape) == net["obs_dim"]):
        raise _Invalid(f"obs_shape must be 3 ints >= 1 whose product is obs_dim ({net['obs_dim']}) for a CNN "
                       f"encoder, not {_short(shape)}")
    if net.get("core", "") not in CORES:
        raise _Invalid(f"core must be one of {CORES}, not {_short(net['core'])}")
    if net.get("separate_value") and (net.get("encoder", "mlp") != "mlp" or net.get("core")):
        raise _Invalid("separate_value must be false with a CNN encoder or a recurrent core")
    if net.get("core") and not (_is_int(net.get("core_size"), 1) and net["core_size"] <= INT_RANGES["core_size"][1]):
        raise _Invalid(f"core_size must be an int in [1, {INT_RANGES['core_size'][1]}], not "
                       f"{_short(net.get('core_size'))}")


def _check_env_kwargs(env_kwargs: object) -> None:
    if not (isinstance(env_kwargs, dict) and all(isinstance(k, str) for k in env_kwargs)):
        raise _Invalid(f"must be a dict with str keys, not {_short(env_kwargs)}")


def _check_config(config: object) -> Config:
    if not isinstance(config, dict):
        raise _Invalid(f"must be a dict, not {type(config).__name__}")
    try:
        return Config.from_dict(config)
    except (ConfigError, TypeError, ValueError) as e:
        raise _Invalid(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _check_rng(rng: object) -> None:
    if not (isinstance(rng, dict) and {"torch", "predictor", "agents"} <= set(rng)):
        raise _Invalid("must be a dict with torch, predictor and agents")
    state, reference = rng["torch"], torch.get_rng_state()
    if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1
            and state.numel() == reference.numel()):
        raise _Invalid(f"torch must be a 1-D uint8 tensor of {reference.numel()} bytes (torch's random state)")
    if not isinstance(rng["agents"], list):
        raise _Invalid(f"agents must be a list, not {type(rng['agents']).__name__}")
    for name, value in [("predictor", rng["predictor"]), *((f"agents[{i}]", s) for i, s in enumerate(rng["agents"]))]:
        try:
            np.random.default_rng(0).bit_generator.state = value
        except (TypeError, ValueError, KeyError, OverflowError, AttributeError):
            raise _Invalid(f"{name} is not a numpy random generator state") from None


def network_model(network: dict, device: str | torch.device = "cpu") -> ActorCritic:
    """A fresh network of the shape a (checked) ``network`` entry describes. On the ``meta`` device it
    has shapes and no storage: a tampered entry asking for a huge network cannot exhaust memory."""
    return build_network(network, device)


def _check_model(weights: object, network: dict) -> None:
    problem = weight_problems(network_model(network, "meta"), weights)
    if problem:
        raise _Invalid(problem)


def weight_problems(model: torch.nn.Module, weights: object) -> str | None:
    """What stops ``weights`` from loading into ``model``, on one line, naming each layer; None if nothing."""
    if not isinstance(weights, Mapping):
        return f"weights must be a dict of tensors, not {type(weights).__name__}"
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in weights]
    unexpected = [str(k) for k in weights if k not in expected]
    if missing:
        problems.append(f"missing layer(s) {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected layer(s) {', '.join(unexpected)}")
    for name, mine in expected.items():
        theirs = weights.get(name)
        if name not in weights:
            continue
        if not isinstance(theirs, torch.Tensor):
            problems.append(f"layer {name}: not a tensor but {type(theirs).__name__}")
        elif theirs.shape != mine.shape:
            problems.append(f"layer {name}: checkpoint {list(theirs.shape)}, network {list(mine.shape)}")
        elif not bool(torch.isfinite(theirs).all()):
            problems.append(f"layer {name}: holds NaN or infinite values")
    return "; ".join(problems) or None


#: The per-parameter state each optimizer keeps (besides 'step'), and a key its param groups hold.
_OPTIMIZER_STATE = {"adam": (("exp_avg", "exp_avg_sq"), "betas"), "rmsprop": (("square_avg",), "alpha")}


def _check_optimizer(state: object, network: dict, config: Config) -> None:
    """The state must be what the Learner's optimizer (one group over the network's parameters, of the
    config's kind) saves, so its ``load_state_dict`` and next step succeed. Checked by hand: building a
    torch optimizer here would import torch's compiler (over a second) just to look at a file."""
    if not (isinstance(state, dict) and isinstance(state.get("state"), dict)
            and isinstance(state.get("param_groups"), list)):
        raise _Invalid("must be a dict with a 'state' dict and a 'param_groups' list")
    kind = config.optimizer
    needed, group_key = _OPTIMIZER_STATE[kind]
    params = list(network_model(network, "meta").named_parameters())
    groups = state["param_groups"]
    ids = groups[0].get("params") if len(groups) == 1 and isinstance(groups[0], dict) else None
    if not (isinstance(ids, list) and len(ids) == len(params) and all(_is_int(i, 0) for i in ids)
            and len(set(ids)) == len(ids)):
        raise _Invalid(f"its param_groups must be one group of the network's {len(params)} parameters")
    if not (group_key in groups[0] and _is_real(groups[0].get("lr"))):
        raise _Invalid(f"its param_groups are not those of {kind} (the config's optimizer)")
    by_id = dict(zip(ids, params))
    for pid, values in state["state"].items():
        if pid not in by_id or not isinstance(values, dict):
            raise _Invalid(f"holds state for an unknown parameter {_short(pid)}")
        name, param = by_id[pid]
        lacking = [k for k in needed if k not in values]
        if values and lacking:
            raise _Invalid(f"state of {name} lacks {', '.join(lacking)} (not {kind}'s)")
        for key, value in values.items():
            if not isinstance(value, torch.Tensor):
                raise _Invalid(f"{key} of {name} is not a tensor but {type(value).__name__}")
            if key == "step":
                if value.numel() != 1 or not bool(torch.isfinite(value).all()) or float(value) < 0:
                    raise _Invalid(f"step of {name} must be one finite number >= 0")
            elif value.shape != param.shape:
                raise _Invalid(f"{key} of {name}: checkpoint {list(value.shape)}, network {list(param.shape)}")
            elif not bool(torch.isfinite(value).all()):
                raise _Invalid(f"{key} of {name} holds NaN or infinite values")


def _check_novelty_counts(counts: object) -> None:
    if not (isinstance(counts, torch.Tensor) and bool(torch.isfinite(counts).all()) and bool((counts >= 0).all())):
        raise _Invalid("must be a tensor of finite counts >= 0")


def check_matches(payload: dict, env: str, obs_dim: int, n_actions: int, config: Config,
                  encoder: str = "mlp", obs_shape: tuple[int, ...] = ()) -> None:
    """Refuse a checkpoint made for another environment or network shape, naming both; ``encoder``: this
    run's, resolved ('auto' made concrete); a CNN's images are compared by ``obs_shape`` (C, H, W), and
    ``hidden``, which a CNN does not use, is not compared."""
    net = payload["network"]
    mine = {"env": env, "obs_dim": obs_dim, "n_actions": n_actions, "hidden": list(config.hidden),
            "core": config.recurrent, "core_size": config.core_size if config.recurrent else 0,
            "running_norm": config.running_obs_norm, "encoder": encoder, "separate_value": config.separate_value}
    if encoder != "mlp":
        del mine["hidden"]
        mine["obs_shape"] = [int(x) for x in obs_shape]
    # what checkpoints without these entries hold
    older = {"core": "", "core_size": 0, "running_norm": False, "encoder": "mlp", "obs_shape": [],
             "separate_value": False}
    theirs = {k: net.get(k, older.get(k)) for k in mine}
    if "hidden" in mine:
        theirs["hidden"] = list(theirs["hidden"] or [])
    if "obs_shape" in mine:
        theirs["obs_shape"] = [int(x) for x in theirs["obs_shape"] or []]
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
    return load_policy_env(path)[:3]


def load_policy_env(path: str | os.PathLike) -> tuple[ActorCritic, str, dict, str]:
    """``load_policy``'s three, and the env wrapper the policy was trained with (its observations)."""
    payload = _read(checkpoint_path(path), {FORMAT: REQUIRED, MODEL_FORMAT: MODEL_REQUIRED})
    net = payload["network"]
    env_kwargs = payload["env_kwargs"] if payload["format"] == MODEL_FORMAT else payload["config"].get("env_kwargs")
    model = network_model(net)
    load_weights(model, payload["model"])
    return model.eval(), str(net["env"]), dict(env_kwargs or {}), str(net.get("env_wrapper", ""))


def load_weights(model: ActorCritic, state: dict) -> None:
    """A checkpoint's weights into ``model``; CheckpointError (one line, naming each layer that does not
    fit and both shapes) instead of torch's multi-line text."""
    problem = weight_problems(model, state)
    if problem:
        raise CheckpointError(f"the checkpoint's weights do not fit this network: {problem}")
    model.load_state_dict(state)
