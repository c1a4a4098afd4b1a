"""tools/convergence.py: the speed-up arithmetic on hand-made curves, and a resumable run over two tiny runs."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from tools.convergence import speedups, steps_to

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_steps_to_threshold_and_speedup():
    baseline = [(1000, 40.0), (2000, 20.0), (3000, 12.0), (4000, 10.0)]
    fast = [(1000, 11.0), (2000, 9.5), (3000, 9.0), (4000, 8.8)]
    slow = [(1000, 50.0), (2000, 45.0), (3000, 30.0), (4000, 25.0)]
    assert steps_to(baseline, 10.0) == 4000 and steps_to(fast, 10.0) == 2000 and steps_to(slow, 10.0) is None
    rows = {r["run"]: r for r in speedups({"base": baseline, "fast": fast, "slow": slow}, "base", None)}
    assert rows["base"]["threshold"] == 10.0  # the baseline's best value
    assert rows["base"]["speedup"] == 1.0 and rows["fast"]["speedup"] == 2.0 and rows["slow"]["speedup"] is None
    rows = {r["run"]: r for r in speedups({"base": baseline, "fast": fast}, "base", 20.0)}
    assert rows["base"]["steps"] == 2000 and rows["fast"]["steps"] == 1000 and rows["fast"]["speedup"] == 2.0


def test_evaluates_every_checkpoint_once_and_plots(tmp_path):
    runs = []
    for weighting in ("const", "min_snr"):
        run = tmp_path / f"x0-{weighting}"
        args = ["--model", "DiT-T/4", "--prediction", "x0", "--weighting", weighting, "--max-steps", "2",
                "--ckpt-every", "1", "--keep-checkpoints", "0", "--global-batch-size", "4", "--num-workers", "0",
                "--results-dir", str(run)]  # fmt: skip
        res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=ENV)
        assert res.returncode == 0, res.stderr[-2000:]
        runs.append(str(run))
    cmd = [sys.executable, str(ROOT / "tools/convergence.py"), *runs, "--out", str(tmp_path / "out"),
           "--num-samples", "12", "--batch-size", "6", "--steps", "2", "--weights", "raw",
           "--device", "cpu"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(tmp_path / "out/curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["run"], int(r["step"])) for r in rows) == [("x0-const", 1), ("x0-const", 2),
                                                                 ("x0-min_snr", 1), ("x0-min_snr", 2)]  # fmt: skip
    assert {r["metric"] for r in rows} == {"fd_fashion"} and all(float(r["value"]) > 0 for r in rows)
    assert (tmp_path / "out/curves.png").stat().st_size > 1000
    assert "speed-up" in res.stdout and "x0-min_snr" in res.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert again.returncode == 0 and ": fd_fashion" not in again.stdout  # nothing new to evaluate
    with open(tmp_path / "out/curves.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
