"""The training benchmark's logic on a tiny budget, its table arithmetic, and the learning-curve drawing.

No timing assertions: the tiny run checks that every system runs in its own
process, is judged and confirmed, and that the result files appear and parse.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_train  # noqa: E402
import sb3_baselines  # noqa: E402

from asynca3c.cli import main as cli_main  # noqa: E402
from asynca3c.core.evaluation import evaluate  # noqa: E402
from asynca3c.outputs.curves import Curve, CurveError, band, plot_run_dirs, read_curve  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_tiny_benchmark_writes_results_table_and_curves(tmp_path):
    systems = ["asynca3c", "seed-threaded"] + (["sb3-ppo"] if sb3_baselines.available() else [])
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(BENCH / "bench_train.py"), "--seeds", "1", "--cap", "2",
                           "--systems", ",".join(systems), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "results.json").read_text())
    assert [r["system"] for r in report["runs"]] == systems
    for r in report["runs"]:
        assert "error" not in r, r
        assert r["env_steps"] > 0 and r["steps_per_second"] > 0 and r["peak_memory_mib"] > 0
        assert r["eval_episodes"] == 100 and 8 <= r["eval_mean_return"] <= 500  # CartPole returns lie in [8, 500]
        assert r["confirmed"] == (r["solved"] and r["eval_mean_return"] >= 475)
        assert r["seconds"] < 2 + 5  # the cap was honoured (with room for stopping)
        run_dir = out / "runs" / r["system"] / "seed0"
        assert json.loads((run_dir / "summary.json").read_text())["system"] == r["system"]
        with (run_dir / "progress.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert rows and float(rows[-1]["seconds"]) > 0
    assert set(report["summary"]) == set(systems)
    table = (out / "results.md").read_text()
    for system in systems:
        assert f"| {system}" in table
    assert (out / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert "results.md" in proc.stdout

    again = tmp_path / "again.png"
    assert cli_main(["plot", *(str(out / "runs" / s) for s in systems), "-o", str(again)]) == 0
    assert again.read_bytes()[:8] == PNG_MAGIC


def _run(system, seed, t, confirmed=True, sps=1000.0):
    return {"system": system, "seed": seed, "confirmed": confirmed, "solved_after_seconds": t,
            "solved_after_steps": int(t * sps) if t is not None else None, "steps_per_second": sps,
            "eval_mean_return": 500.0 if confirmed else 100.0, "peak_memory_mib": 300.0}


def test_summary_counts_unconfirmed_runs_as_never_and_takes_ratios_of_medians():
    runs = [_run("asynca3c", 0, 4.0, sps=400_000), _run("asynca3c", 1, 6.0, sps=500_000),
            _run("asynca3c", 2, 5.0, confirmed=False, sps=450_000),  # solved, but not confirmed: never
            _run("seed-threaded", 0, None, confirmed=False, sps=2000), _run("seed-threaded", 1, None, False, 2000),
            _run("sb3-a2c", 0, 40.0), _run("sb3-a2c", 1, 30.0), _run("sb3-ppo", 0, 20.0), _run("sb3-ppo", 1, 25.0)]
    s = bench_train.summarize(runs, cap=60.0)
    a = s["asynca3c"]
    assert (a["runs"], a["confirmed"]) == (3, 2)
    assert (a["time_median"], a["time_min"], a["time_max"]) == (6.0, 4.0, math.inf)
    assert a["steps_per_second_median"] == 450_000
    assert a["speedup_vs_seed_design"] == "> 10.0x"  # the seed's design never solved: a bound, cap / 6 s
    assert s["sb3-ppo"].get("sb3_best") and not s["sb3-a2c"].get("sb3_best")
    assert a["speedup_vs_sb3_best"] == f"{22.5 / 6.0:.1f}x"
    assert a["throughput_vs_seed_design"] == "225x"
    assert s["seed-threaded"]["speedup_vs_seed_design"] == "-"
    table = bench_train.markdown(s, 60.0, 3)
    assert "| asynca3c | 2/3 | 6.00 [4.00, > 60] |" in table
    assert "| sb3-ppo (SB3's best) | 2/2 | 22.50 [20.00, 25.00] |" in table


def test_failed_runs_are_reported_not_hidden():
    runs = [_run("asynca3c", 0, 4.0), {"system": "asynca3c", "seed": 1, "error": "exit 1: boom",
                                       "confirmed": False, "solved_after_seconds": None}]
    s = bench_train.summarize(runs, cap=10.0)
    assert s["asynca3c"]["errors"] == 1 and s["asynca3c"]["time_max"] == math.inf
    assert "1/2, 1 failed" in bench_train.markdown(s, 10.0, 2)


def test_bad_system_name_is_refused_with_the_allowed_ones(capsys):
    with pytest.raises(SystemExit) as e:
        bench_train.main(["--systems", "asynca3c,dqn"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "dqn" in err and "seed-threaded" in err


def test_curve_holds_last_value_and_band_takes_median_and_quartiles():
    c = Curve(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]))
    np.testing.assert_array_equal(c.at(np.array([0.5, 1.0, 1.5, 2.9, 10.0])), [np.nan, 10, 10, 20, 30])
    curves = [Curve(np.array([1.0]), np.array([v])) for v in (0.0, 100.0, 200.0, 300.0, 400.0)]
    median, low, high = band(curves, np.array([0.0, 1.0]))
    assert np.isnan(median[0]) and (median[1], low[1], high[1]) == (200.0, 100.0, 300.0)


def _write_run(d: Path, rows: list[tuple[float, float]], threshold=475.0):
    d.mkdir(parents=True)
    with (d / "progress.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seconds", "env_steps", "eval_return_mean"])
        for t, r in rows:
            w.writerow([t, int(t * 1000), "" if r is None else r])
    (d / "summary.json").write_text(json.dumps({"reward_threshold": threshold}))


def test_plot_reads_run_dirs_and_groups_of_runs(tmp_path):
    _write_run(tmp_path / "a" / "seed0", [(0.5, None), (1.0, 50.0), (2.0, 480.0)])
    _write_run(tmp_path / "a" / "seed1", [(1.0, 30.0), (3.0, 200.0)])
    _write_run(tmp_path / "b", [(1.0, 20.0)])
    c = read_curve(tmp_path / "a" / "seed0")
    assert c.threshold == 475.0 and np.isnan(c.returns[0]) and c.returns[-1] == 480.0
    out = plot_run_dirs([tmp_path / "a", tmp_path / "b"], tmp_path / "c.png", labels=["mine", "theirs"])
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_errors_name_the_problem(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["plot", str(tmp_path / "empty"), "-o", str(tmp_path / "x.png")]) == 2
    assert "holds no progress.csv" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "progress.csv").write_text("seconds,steps\n1,2\n")
    with pytest.raises(CurveError, match="lacks the column"):
        read_curve(bad)
    _write_run(tmp_path / "ok", [(1.0, 10.0)])
    with pytest.raises(CurveError, match="2 labels given for 1"):
        plot_run_dirs([tmp_path / "ok"], tmp_path / "x.png", labels=["a", "b"])
    assert not (tmp_path / "x.png").exists()


def test_evaluate_judges_any_callable_policy_on_the_same_episodes():
    always_left = evaluate(lambda obs: np.zeros(len(obs), dtype=np.int64), "CartPole-v1", 10, seed=3)
    assert len(always_left.returns) == 10 and max(always_left.returns) < 20  # pushing one way falls fast
    stats = always_left.stats()
    assert stats["min"] <= stats["mean"] <= stats["max"] and stats["std"] >= 0
    with pytest.raises(TypeError, match="callable"):
        evaluate(42, "CartPole-v1", 1)
