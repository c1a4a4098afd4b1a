"""tools/demo.py end to end at toy size: it trains, samples, scores and leaves the labelled samples and the pictures."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_and_reports_accuracy_beside_fd(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(ROOT / "tools/demo.py"),
        "--out",
        str(tmp_path),
        "--max-steps",
        "2",
        "--num-samples",
        "20",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("recipe: DiT-T/4, x0 + const")
    assert re.search(r"label accuracy \d+% \(real test images: 91%\), FD-fashion [\d.]+ \(20 samples\)", res.stdout)
    # scored during training (train.py --eval-every 500) at the last step, into the run's log
    assert re.search(r"FD-fashion during training \(200 samples, dpm\+\+-10, cfg 3\): step 2 [\d.]+\n", res.stdout)
    assert (tmp_path / "run/eval/0000002.png").exists()
    with np.load(tmp_path / "samples-0000002.npz", allow_pickle=False) as f:
        assert f["arr_0"].shape == (20, 32, 32, 1) and f["arr_1"].tolist() == list(range(10)) * 2
    assert (tmp_path / "samples.png").stat().st_size > 0 and (tmp_path / "curves.png").stat().st_size > 0
