"""A run directory's files, beside the checkpoint: progress.csv, config.json, summary.json, model.pt.

``progress.csv`` gains a row per progress report while the run goes on (the
header is the metrics row's keys); the other three are written once at the end.
``model.pt`` holds only what playing the policy needs (weights, network shape,
env arguments) and is read back by ``asynca3c eval RUN_DIR/model.pt``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from asynca3c.config import Config
from asynca3c.core.messages import MetricsRow

PROGRESS_FILE = "progress.csv"


class RunDirectory:
    """The files of one run, in ``path`` (made on first write)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

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

    def write_final(self, config: Config, summary: dict, weights: dict, network: dict) -> None:
        """config.json, summary.json and model.pt, at the end of a run."""
        from asynca3c.outputs import checkpoint  # torch: only here, so curves can read run dirs without it

        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(config.to_json() + "\n")
        checkpoint.save_model(self.path / checkpoint.MODEL_FILE, weights, network, config.env_kwargs)
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
