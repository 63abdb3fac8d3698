"""Hardening of the files a run writes and reads: atomic writes, stale temporaries, a full disk,
checked checkpoint entries, refused pickles, clear shape errors, and run-directory claims."""

from __future__ import annotations

import copy
import errno
import functools
import json
import os
import pickle

import gymnasium  # noqa: F401  (a save records its version: imported here, not timed in the first test)
import numpy as np
import pytest
import torch

from asynca3c import Config
from asynca3c.core.model import ActorCritic
from asynca3c.errors import CheckpointError, RunDirError
from asynca3c.outputs import checkpoint
from asynca3c.outputs.run_dir import RunDirectory
from asynca3c.runtime.progress import Progress

NETWORK = {"env": "CartPole-v1", "obs_dim": 4, "n_actions": 2, "hidden": [8], "continuous": False}
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module", autouse=True)
def _torch_optimizers_imported():
    """The first torch optimizer imports torch's compiler (over a second): paid once, in setup."""
    _valid_payload("adam")


def _payload(optimizer: str = "adam") -> dict:
    """A fresh copy of a valid checkpoint payload, for a test to change."""
    return copy.deepcopy(_valid_payload(optimizer))


@functools.cache
def _valid_payload(optimizer: str) -> dict:
    """A valid checkpoint payload, as a run saves it (one optimizer step taken)."""
    config = Config(env="CartPole-v1", hidden=(8,), optimizer=optimizer)
    model = ActorCritic(4, 2, (8,))
    opt = (torch.optim.Adam(model.parameters(), lr=config.lr) if optimizer == "adam"
           else torch.optim.RMSprop(model.parameters(), lr=config.lr))
    model(torch.zeros(3, 4))[1].sum().backward()
    opt.step()
    progress = Progress(10, 475.0)
    progress.add_episode(20.0, judged=True, length=20)
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "version": 1,
            "config": config.to_dict(), "network": dict(NETWORK), "counters": progress.state(),
            "rng": {"torch": torch.get_rng_state(), "predictor": np.random.default_rng(1).bit_generator.state,
                    "agents": [np.random.default_rng(2).bit_generator.state]}}


def _temps(directory) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_final_files_are_written_atomically_and_summary_alone(tmp_path, monkeypatch):
    run = RunDirectory(tmp_path / "run")
    config = Config(env="CartPole-v1", hidden=(8,))
    weights = ActorCritic(4, 2, (8,)).state_dict()
    written = []
    real = checkpoint.write_atomically
    monkeypatch.setattr(checkpoint, "write_atomically", lambda p, d: written.append(p.name) or real(p, d))
    run.write_model(config, weights, NETWORK)
    run.write_summary({"stop_reason": "seconds"})
    assert written == ["config.json", "model.pt", "summary.json"]
    run.write_summary({"stop_reason": "seconds", "eval_mean_return": 20.0})
    assert json.loads((run.path / "summary.json").read_text())["eval_mean_return"] == 20.0
    assert Config.from_dict(json.loads((run.path / "config.json").read_text())).hidden == (8,)
    model, env, _ = checkpoint.load_policy(run.path / "model.pt")
    assert env == "CartPole-v1" and torch.equal(model.state_dict()["policy.weight"], weights["policy.weight"])
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "model.pt", "summary.json"]


def test_a_save_removes_temporaries_a_killed_save_of_that_file_left(tmp_path):
    stale = [".checkpoint.pt.ab3_x9zq.tmp", ".checkpoint.pt.00000000.tmp"]
    kept = [".model.pt.ab3_x9zq.tmp", ".checkpoint.pt.bak.ab3_x9zq.tmp", "checkpoint.pt.notes.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"half")
    checkpoint.save(tmp_path / "checkpoint.pt", _payload())
    assert sorted(_temps(tmp_path)) == sorted(kept)
    assert checkpoint.load(tmp_path)["version"] == 1


@pytest.mark.parametrize("target", ["checkpoint", "model", "summary"])
@pytest.mark.parametrize("failing", ["fsync", "write"])
def test_a_full_disk_keeps_the_old_file_and_says_which_file(tmp_path, monkeypatch, target, failing):
    run = RunDirectory(tmp_path)
    config = Config(env="CartPole-v1", hidden=(8,))
    weights = ActorCritic(4, 2, (8,)).state_dict()
    writes = {"checkpoint": lambda: checkpoint.save(tmp_path / "checkpoint.pt", _payload()),
              "model": lambda: run.write_model(config, weights, NETWORK),
              "summary": lambda: run.write_summary({"stop_reason": "seconds"})}
    files = [tmp_path / n for n in {"checkpoint": ["checkpoint.pt"], "model": ["config.json", "model.pt"],
                                    "summary": ["summary.json"]}[target]]
    writes[target]()
    before = [f.read_bytes() for f in files]
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise ENOSPC

    def full(*_):
        raise ENOSPC

    monkeypatch.setattr(os, failing, half_then_full if failing == "write" else full)
    with pytest.raises(OSError) as caught:
        writes[target]()
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"[Errno 28] could not write {files[0]}: No space left on device"
    assert [f.read_bytes() for f in files] == before
    assert _temps(tmp_path) == []


def test_a_valid_checkpoint_loads_with_either_optimizer(tmp_path):
    for kind in ("adam", "rmsprop"):
        checkpoint.save(tmp_path / f"{kind}.pt", _payload(kind))
        assert checkpoint.load(tmp_path / f"{kind}.pt")["config"]["optimizer"] == kind
        model, env, kwargs = checkpoint.load_policy(tmp_path / f"{kind}.pt")
        assert env == "CartPole-v1" and kwargs == {} and not model.training


def _nan_layer(p):
    p["model"]["body.0.weight"][0, 0] = float("nan")


def _inf_moment(p):
    p["optimizer"]["state"][0]["exp_avg"][0, 0] = float("inf")


def _rmsprop_state(p):
    p["optimizer"] = _payload("rmsprop")["optimizer"]


def _short_moment(p):
    p["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)


TAMPERED = {
    "version": [lambda p: p.update(version=-1), lambda p: p.update(version=True), lambda p: p.update(version="7")],
    "counters": [lambda p: p.update(counters=[]), lambda p: p["counters"].pop("env_steps"),
                 lambda p: p["counters"].update(env_steps=-5), lambda p: p["counters"].update(seconds=float("inf")),
                 lambda p: p["counters"].update(episodes=2.5), lambda p: p["counters"].update(eval_returns=[1, None]),
                 lambda p: p["counters"].update(solved_after_seconds=float("nan"))],
    "network": [lambda p: p["network"].update(env=""), lambda p: p["network"].update(obs_dim=0),
                lambda p: p["network"].update(hidden=[8, "x"]), lambda p: p["network"].update(continuous="no"),
                lambda p: p.update(network="CartPole-v1")],
    "rng": [lambda p: p["rng"].update(torch=torch.zeros(5, dtype=torch.uint8)),
            lambda p: p["rng"].update(torch=torch.get_rng_state().float()),
            lambda p: p["rng"].update(predictor={"bit_generator": "MT19937"}),
            lambda p: p["rng"].update(agents=[{"bit_generator": "PCG64", "state": {}}]),
            lambda p: p["rng"].update(agents={})],
    "model": [_nan_layer, lambda p: p["model"].pop("value.bias"), lambda p: p["model"].update(extra=torch.ones(1)),
              lambda p: p["model"].update({"policy.weight": [[0.0] * 8] * 2})],
    "optimizer": [lambda p: p.update(optimizer={}), _inf_moment, _rmsprop_state, _short_moment,
                  lambda p: p["optimizer"]["param_groups"].append(dict(p["optimizer"]["param_groups"][0]))],
    "config": [lambda p: p.update(config={"lr": -1.0}), lambda p: p.update(config={"no_such": 1}),
               lambda p: p.update(config=["adam"])],
}


@pytest.mark.parametrize(("entry", "tamper"), [(e, t) for e, ts in TAMPERED.items() for t in ts])
def test_a_tampered_entry_is_refused_by_name(tmp_path, entry, tamper):
    payload = _payload()
    tamper(payload)
    path = checkpoint.save(tmp_path / "checkpoint.pt", payload)
    for read in (checkpoint.load, checkpoint.load_policy):
        with pytest.raises(CheckpointError, match=f"unusable '{entry}' entry") as caught:
            read(path)
        assert "\n" not in str(caught.value)


def test_a_tampered_model_file_is_refused_by_name(tmp_path):
    weights = ActorCritic(4, 2, (8,)).state_dict()
    weights["value.weight"][0, 0] = float("inf")
    path = checkpoint.save_model(tmp_path / "model.pt", weights, NETWORK, {})
    with pytest.raises(CheckpointError, match=r"unusable 'model' entry: layer value\.weight: holds NaN or inf"):
        checkpoint.load_policy(path)
    checkpoint.save_model(path, ActorCritic(4, 2, (8,)).state_dict(), {**NETWORK, "n_actions": 0}, {})
    with pytest.raises(CheckpointError, match="unusable 'network' entry: n_actions"):
        checkpoint.load_policy(path)
    torch.save({**torch.load(path, weights_only=True), "network": NETWORK, "env_kwargs": [1]}, path)
    with pytest.raises(CheckpointError, match="unusable 'env_kwargs' entry"):
        checkpoint.load_policy(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo unpickled",))


def test_a_pickle_holding_code_is_refused_without_advice_to_unsafe_loading(tmp_path, capfd):
    zipped, plain, proto2 = tmp_path / "zipped.pt", tmp_path / "plain.pt", tmp_path / "proto2.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION, "x": _RunsCode()}, zipped)
    plain.write_bytes(pickle.dumps({"x": _RunsCode()}))
    proto2.write_bytes(pickle.dumps(_RunsCode(), protocol=2))
    for path in (zipped, plain, proto2):
        for read in (checkpoint.load, checkpoint.load_policy):
            with pytest.raises(CheckpointError, match="refused: it holds Python code") as caught:
                read(path)
            assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)
    out, err = capfd.readouterr()
    assert "unpickled" not in out and err == ""


def test_weights_for_another_shape_name_the_layer_and_both_shapes(tmp_path):
    payload = _payload()
    payload["network"]["hidden"] = [64]
    path = checkpoint.save(tmp_path / "checkpoint.pt", payload)
    with pytest.raises(CheckpointError, match=r"layer body\.0\.weight: checkpoint \[8, 4\], network \[64, 4\]") \
            as caught:
        checkpoint.load(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(CheckpointError, match=r"do not fit this network: layer body\.0\.weight: checkpoint "
                                              r"\[8, 4\], network \[64, 4\]; layer body\.0\.bias: checkpoint "
                                              r"\[8\], network \[64\]") as caught:
        checkpoint.load_weights(ActorCritic(4, 2, (64,)), _payload()["model"])
    assert "\n" not in str(caught.value)


def test_claim_refuses_files_unwritable_dirs_and_other_runs(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(RunDirError, match=f"run directory {a_file} is a file"):
        RunDirectory(a_file).claim(resume=False, overwrite=False)
    with pytest.raises(RunDirError, match=f"is under a file \\({a_file}\\)"):
        RunDirectory(a_file / "a" / "b").claim(resume=False, overwrite=False)

    new = RunDirectory(tmp_path / "new" / "deep")
    new.claim(resume=False, overwrite=False)
    assert new.path.is_dir() and list(new.path.iterdir()) == []

    def read_only(*_, **__):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(RunDirError, match=f"run directory {new.path} is not writable \\(Permission denied\\)"):
        new.claim(resume=False, overwrite=False)
    monkeypatch.undo()

    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    names = ["checkpoint.pt", "model.pt", "summary.json", "config.json", "progress.csv",
             ".checkpoint.pt.abcd1234.tmp", "notes.txt"]
    for name in names:
        (run.path / name).write_text("old")
    (run.path / "tensorboard").mkdir()
    (run.path / "tensorboard" / "events").write_text("old")
    with pytest.raises(RunDirError, match="already holds a run .*use --resume to continue it or --overwrite to "
                                          "replace it") as caught:
        run.claim(resume=False, overwrite=False)
    assert "\n" not in str(caught.value) and str(run.path) in str(caught.value)
    run.claim(resume=True, overwrite=False)
    assert sorted(p.name for p in run.path.iterdir()) == sorted([*names, "tensorboard"])
    run.claim(resume=False, overwrite=True)  # allowed; nothing is removed until the run is ready to start
    assert sorted(p.name for p in run.path.iterdir()) == sorted([*names, "tensorboard"])
    run.clear()
    assert [p.name for p in run.path.iterdir()] == ["notes.txt"]
