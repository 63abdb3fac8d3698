"""The kernel microbenchmark's own logic, on a tiny budget (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from asynca3c.cli import main as cli_main
from asynca3c.core._kernel_bench import SYSTEMS, check_agreement, make_data
from asynca3c.core._vtrace_bench import VTRACE_SYSTEMS, make_segments, numpy_vtrace
from asynca3c.core.vtrace import vtrace


def main(args: list[str]) -> int:
    return cli_main(["bench", "returns", *args])


def test_every_system_emits_the_same_samples():
    r, te, tr = make_data(8, 4000, seed=3, end_prob=0.05)
    ok, detail = check_agreement(8, 5, 0.95, r, te, tr)
    assert ok, detail


def test_main_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--envs", "4", "--n", "3", "--steps", "2000", "--repeats", "1", "--vtrace-steps", "5",
                 "--vtrace-envs", "3", "--vtrace-batches", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for key in SYSTEMS:
        assert SYSTEMS[key].format(envs=4) in text
    report = json.loads(out.read_text())
    assert report["agreement"]["ok"]
    assert set(report["results"]) == set(SYSTEMS)
    for figures in report["results"].values():
        assert figures["ns_per_transition"] > 0
    assert report["results"]["twin_python"]["speedup_vs_twin"] == 1.0
    assert set(report["targets"]) == {"kernel_batch_ns_le_20", "kernel_batch_speedup_vs_twin_ge_100",
                                      "kernel_one_ns_le_300"}
    vt = report["vtrace"]
    assert vt["agreement"]["ok"] and vt["params"]["T"] == 5 and vt["params"]["E"] == 3
    assert set(vt["results"]) == set(VTRACE_SYSTEMS)
    for key, figures in vt["results"].items():
        assert figures["ns_per_step"] > 0 and VTRACE_SYSTEMS[key] in text
    assert vt["results"]["twin_python"]["speedup_vs_twin"] == 1.0
    assert set(vt["targets"]) == {"vtrace_ns_le_30", "vtrace_speedup_vs_twin_ge_100"}


def test_numpy_scan_agrees_with_the_kernel_on_vector_env_segments():
    rng = np.random.default_rng(5)
    for _ in range(5):
        seg = make_segments(12, 9, rng, end_prob=0.2)
        want, got = vtrace(**seg, gamma=0.95, rho_bar=1.5), numpy_vtrace(**seg, gamma=0.95, rho_bar=1.5)
        np.testing.assert_allclose(got.vs, want.vs, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(got.advantages, want.advantages, rtol=1e-12, atol=1e-10)
        assert not seg["valid"][1:][seg["terminated"][:-1] | seg["truncated"][:-1]].any()


def test_cli_and_script_run_the_same_benchmark(tmp_path):
    args = ["--envs", "2", "--n", "2", "--steps", "500", "--repeats", "1"]
    for cmd in ([sys.executable, "-m", "asynca3c.cli", "bench", "returns", *args],
                [sys.executable, str(Path(__file__).parents[2] / "bench" / "bench_returns.py"), *args]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "| kernel push (2 envs/call) |" in done.stdout


def test_bad_arguments_are_refused_with_one_line(assert_one_line_error, run_cli):
    assert_one_line_error(run_cli("bench", "returns", "--gamma", "0", timeout=60), "must be in (0, 1]")
