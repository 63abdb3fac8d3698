"""Learning curves from run directories: evaluation return against wall-clock seconds.

Every run directory holds ``progress.csv`` (one row per progress report, with
at least ``seconds`` and ``eval_return_mean``); the training benchmark writes
the same file for its baselines, so one drawing serves ``asynca3c plot`` and
``bench/bench_train.py``. Runs of one group are put on a common time grid
(each holds its last reported value, also after it stopped, so a run that
stopped when solved keeps counting as solved) and drawn as the median with the
range between the 25th and 75th percentile shaded.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asynca3c.errors import CurveError
from asynca3c.outputs.run_dir import PROGRESS_FILE


@dataclass
class Curve:
    """One run's evaluation return over time (NaN before the first evaluation episode ended)."""

    seconds: np.ndarray
    returns: np.ndarray
    threshold: float | None = None

    def at(self, grid: np.ndarray) -> np.ndarray:
        """The last reported value at each grid time: NaN before the first report."""
        idx = np.searchsorted(self.seconds, grid, side="right") - 1
        out = np.full(grid.shape, np.nan)
        ok = idx >= 0
        out[ok] = self.returns[idx[ok]]
        return out


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_curve(run_dir: str | Path) -> Curve:
    """The curve of one run directory (its ``progress.csv``; threshold from ``summary.json`` when present)."""
    run_dir = Path(run_dir)
    path = run_dir / PROGRESS_FILE
    if not path.is_file():
        raise CurveError(f"{run_dir} is not a run directory: it has no {PROGRESS_FILE}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"seconds", "eval_return_mean"} - set(reader.fieldnames or ())
        if missing:
            raise CurveError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
        rows = [(_float(r["seconds"]), _float(r["eval_return_mean"])) for r in reader]
    rows = [r for r in rows if not math.isnan(r[0])]
    if not rows:
        raise CurveError(f"{path} has no progress rows yet")
    rows.sort()
    threshold = None
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            threshold = json.loads(summary.read_text()).get("reward_threshold")
        except (json.JSONDecodeError, AttributeError):
            threshold = None
    seconds, returns = (np.array(col, dtype=np.float64) for col in zip(*rows))
    return Curve(seconds, returns, threshold)


def is_run_dir(path: Path) -> bool:
    return (path / PROGRESS_FILE).is_file()


def runs_under(path: str | Path) -> list[Path]:
    """A run directory itself, or the run directories directly inside it (a group of seeds)."""
    path = Path(path)
    if is_run_dir(path):
        return [path]
    if not path.is_dir():
        raise CurveError(f"{path} does not exist or is not a directory")
    runs = sorted(p for p in path.iterdir() if p.is_dir() and is_run_dir(p))
    if not runs:
        raise CurveError(f"{path} holds no {PROGRESS_FILE}, nor do the directories directly inside it")
    return runs


def band(curves: list[Curve], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, 25th and 75th percentile over the runs at each grid time (NaN where no run has a value)."""
    values = np.vstack([c.at(grid) for c in curves])
    out = np.full((3, grid.size), np.nan)
    some = ~np.all(np.isnan(values), axis=0)
    if some.any():
        out[:, some] = np.nanpercentile(values[:, some], [50, 25, 75], axis=0)
    return out[0], out[1], out[2]


def plot(groups: dict[str, list[Curve]], output: str | Path, *, title: str = "", points: int = 400) -> Path:
    """Draw one line per group (median, interquartile band) to a PNG; returns its path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CurveError("drawing needs matplotlib: pip install 'asynca3c[plot]'") from None
    groups = {name: curves for name, curves in groups.items() if curves}
    if not groups:
        raise CurveError("nothing to draw: no runs given")
    end = max(float(c.seconds[-1]) for curves in groups.values() for c in curves)
    grid = np.linspace(0.0, max(end, 1e-3), points)
    fig = Figure(figsize=(8, 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    thresholds: set[float] = set()
    for name, curves in groups.items():
        median, low, high = band(curves, grid)
        label = f"{name} (median of {len(curves)})" if len(curves) > 1 else name
        (line,) = ax.plot(grid, median, label=label, linewidth=1.8)
        if len(curves) > 1:
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        thresholds.update(c.threshold for c in curves if c.threshold is not None)
    for t in sorted(thresholds):
        ax.axhline(t, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("wall-clock seconds since training started")
    ax.set_ylabel("mean return, last episodes without epsilon")
    ax.set_title(title or "learning curves (shaded: 25th-75th percentile over runs)")
    ax.set_xlim(0, grid[-1])
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    return output


def plot_run_dirs(paths: list[str | Path], output: str | Path, *, labels: list[str] | None = None,
                  title: str = "") -> Path:
    """``asynca3c plot``: each path is one run, or a directory of runs drawn as one median line."""
    if labels is not None and len(labels) != len(paths):
        raise CurveError(f"{len(labels)} labels given for {len(paths)} run directories; give one per directory")
    groups: dict[str, list[Curve]] = {}
    for i, path in enumerate(paths):
        name = labels[i] if labels else Path(path).resolve().name
        while name in groups:
            name += "'"
        groups[name] = [read_curve(p) for p in runs_under(path)]
    return plot(groups, output, title=title)
