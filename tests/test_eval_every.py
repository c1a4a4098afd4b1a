"""train.py --eval-every: the in-training score is sample_ddp.py + evaluate_fid.py's on the saved checkpoint, the
same for 1 and 2 processes, and scoring leaves the training trajectory bit for bit as it was."""

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import evaluate
from tests.processes import launcher
from training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
# The demo recipe at toy size; lr 1e-2 and EMA 0.5 move DiT's zero-initialised output within 4 steps, so the
# samples differ from each other and from one setting to another (as the golden test's "sampling-source" run).
TRAIN = ["--config", str(ROOT / "configs/fashion_dit-t4_x0_const.toml"), "--global-batch-size", "8",
         "--num-workers", "0", "--warmup-steps", "0", "--lr", "1e-2", "--ema-decay", "0.5", "--log-every", "2",
         "--ckpt-every", "2", "--keep-checkpoints", "0"]  # fmt: skip
SAMPLING = {"samples": 20, "batch-size": 10, "sampler": "heun", "steps": 3, "cfg-scale": 1.5, "seed": 3}


def eval_flags(ref: Path, every: int) -> list[str]:
    return ["--eval-every", str(every), "--eval-ref", str(ref),
            *[item for k, v in SAMPLING.items() for item in (f"--eval-{k}", str(v))]]  # fmt: skip


def run(script: str, args: list, nproc: int = 1) -> None:
    res = subprocess.run([*launcher(nproc), str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                         env=ENV, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]


def scores(run_dir: Path, metric: str = "fd_fashion") -> dict[int, str]:
    with open(run_dir / "metrics.csv") as f:
        return {int(r["step"]): r[metric] for r in csv.DictReader(f) if r[metric]}


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    """A small reference: 64 random grey 32×32 images (its statistics are computed at the start of training)."""
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    np.savez(path, arr_0=np.random.default_rng(0).integers(0, 256, (64, 32, 32, 1), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def scored(tmp_path_factory, ref) -> Path:
    """4 steps, scored at steps 2 and 4."""
    out = tmp_path_factory.mktemp("scored") / "run"
    run("train.py", [*TRAIN, "--max-steps", "4", *eval_flags(ref, 2), "--results-dir", out])
    return out


@pytest.mark.filterwarnings("ignore:the .* covariance .* is singular")  # 20 samples in 128 dimensions
def test_the_score_is_sample_ddp_and_evaluate_fid_on_the_checkpoint(scored, ref, tmp_path):
    logged = scores(scored)
    assert sorted(logged) == [2, 4] and logged[2] != logged[4]
    npz = tmp_path / "s.npz"
    run("sample_ddp.py", ["--ckpt", scored / "checkpoints/0000004.pt", "--num-samples", SAMPLING["samples"],
                          "--per-proc-batch-size", SAMPLING["batch-size"], "--sampler", SAMPLING["sampler"],
                          "--steps", SAMPLING["steps"], "--cfg-scale", SAMPLING["cfg-scale"], "--seed",
                          SAMPLING["seed"], "--out", npz])  # fmt: skip
    result = evaluate(ref, npz, "fid", "fashion", batch_size=SAMPLING["batch-size"], device="cpu")
    assert logged[4] == f"{result['metrics']['fd_fashion']:.6g}"  # metrics.csv keeps 6 significant digits
    # the grid: a row per class (sample i has label i mod 10), the first 2 samples of each, 2-pixel gaps
    grid = np.asarray(Image.open(scored / "eval/0000004.png"))
    with np.load(npz) as f:
        images = f["arr_0"][..., 0]
    assert grid.shape == (2 + 10 * 34, 2 + 2 * 34)
    for c in range(10):
        for j in range(2):
            assert np.array_equal(grid[2 + 34 * c : 34 * (c + 1), 2 + 34 * j : 34 * (j + 1)], images[c + 10 * j])
    assert sorted(p.name for p in (scored / "eval").iterdir()) == ["0000002.png", "0000004.png"]


def test_one_and_two_processes_give_the_same_score(scored, ref, tmp_path):
    """Both continue the scored run's step-2 checkpoint for one step at lr 0, so their weights are the same bit for
    bit (DDP's averaged gradients would differ in the last bits); only the evaluation differs: 20 samples drawn
    by one rank, or 10 by each of two."""
    for nproc in (1, 2):
        args = [*TRAIN, "--lr", "0", "--max-steps", "3", *eval_flags(ref, 3), "--results-dir", tmp_path / f"{nproc}",
                "--resume", scored / "checkpoints/0000002.pt"]  # fmt: skip
        run("train.py", args, nproc)
    assert scores(tmp_path / "1").keys() == {3}
    assert scores(tmp_path / "1") == scores(tmp_path / "2")
    assert (tmp_path / "1/eval/0000003.png").read_bytes() == (tmp_path / "2/eval/0000003.png").read_bytes()


def test_scoring_leaves_the_training_trajectory_bit_identical(scored, tmp_path):
    run("train.py", [*TRAIN, "--max-steps", "4", "--results-dir", tmp_path / "plain"])
    with_eval, plain = (load_checkpoint(d / "checkpoints/0000004.pt") for d in (scored, tmp_path / "plain"))
    for part in ("model", "ema"):
        assert all(torch.equal(with_eval[part][k], plain[part][k]) for k in plain[part]), part
    assert scores(scored, "loss") == scores(tmp_path / "plain", "loss")
    assert "fd_fashion" not in (tmp_path / "plain/metrics.csv").read_text()


def test_a_rerun_removes_a_killed_grid_write(scored, ref, tmp_path):
    """RUN/eval is one of train.py's outputs, so the temporary file of a grid write killed mid-save goes on restart."""
    copy = tmp_path / "run"
    shutil.copytree(scored, copy)
    planted = copy / "eval/.0000004.png.k1ll.tmp"
    planted.write_bytes(b"half a png")
    run("train.py", [*TRAIN, "--max-steps", "4", *eval_flags(ref, 2), "--results-dir", copy, "--resume", "auto"])
    assert not planted.exists() and (copy / "eval/0000004.png").exists()
