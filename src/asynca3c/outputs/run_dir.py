"""A run directory's files, beside the checkpoint: progress.csv, config.json, summary.json, model.pt.

``progress.csv`` gains a row per progress report while the run goes on (the
header is the metrics row's keys); the other three are written at the end,
each atomically (a crash or a full disk leaves the previous file whole).
``model.pt`` holds only what playing the policy needs (weights, network shape,
env arguments) and is read back by ``asynca3c eval RUN_DIR/model.pt``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

from asynca3c.config import Config
from asynca3c.core.messages import MetricsRow
from asynca3c.errors import RunDirError

PROGRESS_FILE = "progress.csv"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"
#: Files whose presence means the directory already holds a run.
RUN_MARKERS = ("checkpoint.pt", PROGRESS_FILE, SUMMARY_FILE, "model.pt")
#: What ``claim(overwrite=True)`` removes: a run's own files, so the new run's are not mixed with them.
RUN_FILES = (*RUN_MARKERS, CONFIG_FILE)


class RunDirectory:
    """The files of one run, in ``path`` (made on first write)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def claim(self, *, resume: bool, overwrite: bool) -> None:
        """Make sure the run can write here before it trains, so a bad path fails in a second, not at
        the first checkpoint: RunDirError (one line) for a file, a path under a file, a directory that
        cannot be written, or another run's directory unless ``resume`` (continue it) or ``overwrite``
        (then ``clear`` removes its files, once everything else about the new run has been checked).
        Makes the directory, parents too."""
        path = self.path
        if resume and overwrite:
            raise RunDirError(f"run directory {path}: --resume continues the run there and --overwrite "
                              "replaces it; give one of them")
        if path.exists() and not path.is_dir():
            raise RunDirError(f"run directory {path} is a file; give a directory (new, empty, or a run to "
                              "--resume)")
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise RunDirError(f"run directory {path} is under a file ({blocker}); give a path whose parents "
                              "are directories")
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".asynca3c-write-probe.", suffix=".tmp", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:  # as root os.access says yes to everything: only a real write tells
            raise RunDirError(f"run directory {path} is not writable ({e.strerror or e}); give a directory "
                              "you can create files in") from None
        found = [name for name in RUN_MARKERS if (path / name).exists()]
        if not found or resume:
            return
        if not overwrite:
            raise RunDirError(f"run directory {path} already holds a run ({', '.join(found)}): use --resume to "
                              "continue it or --overwrite to replace it (or give a different --run-dir)")

    def clear(self) -> None:
        """Remove a previous run's files, its tensorboard logs and the temporaries of its killed saves, so
        the new run's files are not mixed with them (``overwrite``)."""
        from asynca3c.outputs import checkpoint

        try:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
                checkpoint.remove_stale_temps(self.path / name)
            if (self.path / TENSORBOARD_DIR).is_dir():
                shutil.rmtree(self.path / TENSORBOARD_DIR)
        except OSError as e:
            raise RunDirError(f"run directory {self.path}: could not remove the previous run's files "
                              f"({e.strerror or e}); remove them or give a different --run-dir") from None

    def append_progress(self, row: MetricsRow) -> None:
        """One progress row; the header comes with the first."""
        self.path.mkdir(parents=True, exist_ok=True)
        file = self.path / PROGRESS_FILE
        new = not file.exists()
        with file.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def write_model(self, config: Config, weights: dict, network: dict) -> None:
        """config.json and model.pt: the policy is safe on disk before a final evaluation that may fail."""
        from asynca3c.outputs import checkpoint  # torch: only here, so curves can read run dirs without it

        checkpoint.write_atomically(self.path / CONFIG_FILE, config.to_json() + "\n")
        checkpoint.save_model(self.path / checkpoint.MODEL_FILE, weights, network, config.env_kwargs)

    def write_summary(self, summary: dict) -> None:
        """summary.json alone: written before the final evaluation, and again with its figures."""
        from asynca3c.outputs import checkpoint

        checkpoint.write_atomically(self.path / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
