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
from evaluation.features import save_random_inception
from tests.processes import launcher
from tests.stand_ins import save_tiny_vae
from training.checkpoint import load_checkpoint
from training.logger import RunLogger

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
# The demo recipe at toy size; lr 1e-2 and EMA 0.5 move DiT's zero-initialised output within 4 steps, so the
# samples differ from each other and from one setting to another (as the golden test's "sampling-source" run).
TRAIN = [
    *f"--config {ROOT / 'configs/fashion_dit-t4_x0_const.toml'} --global-batch-size 8 --num-workers 0".split(),
    *"--warmup-steps 0 --lr 1e-2 --ema-decay 0.5 --log-every 2 --ckpt-every 2 --keep-checkpoints 0".split(),
]
SAMPLING = {"samples": 20, "batch-size": 10, "sampler": "heun", "steps": 3, "cfg-scale": 1.5, "seed": 3}


def eval_flags(ref: Path, every: int) -> list[str]:
    settings = [item for k, v in SAMPLING.items() for item in (f"--eval-{k}", str(v))]
    return ["--eval-every", str(every), "--eval-ref", str(ref), *settings]


def sample_flags() -> list:
    """sample_ddp.py's flags for the settings SAMPLING gives --eval-*."""
    names = {"samples": "num-samples", "batch-size": "per-proc-batch-size"}
    return [item for k, v in SAMPLING.items() for item in (f"--{names.get(k, k)}", v)]


def run(script: str, args: list, nproc: int = 1) -> None:
    res = subprocess.run(
        [*launcher(nproc), str(ROOT / script), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300
    )
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
    run(
        "sample_ddp.py",
        ["--ckpt", scored / "checkpoints/0000004.pt", *sample_flags(), "--out", npz],
    )
    result = evaluate(ref, npz, "fid", "fashion", batch_size=SAMPLING["batch-size"], device="cpu")
    assert np.isfinite(result["metrics"]["fd_fashion"])
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
        args = [
            *TRAIN,
            "--lr",
            "0",
            "--max-steps",
            "3",
            *eval_flags(ref, 3),
            "--results-dir",
            tmp_path / f"{nproc}",
            "--resume",
            scored / "checkpoints/0000002.pt",
        ]
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


def test_curves_reads_the_score_from_the_training_log(scored):
    from tools.curves import load

    assert [step for step, _ in load([str(scored)], "fd_fashion")[str(scored)]] == [2, 4]


def test_a_resumed_log_widens_its_header_for_the_first_score(tmp_path):
    """A run that logged without scores, resumed with --eval-every: the header gains the columns, old rows are
    padded with empty cells, and every row keeps its values."""
    first = RunLogger(tmp_path, True)
    first.metrics(1, {"loss": 0.5, "lr": 1e-3})
    first.close()
    again = RunLogger(tmp_path, True, start_step=1)
    again.metrics(2, {"loss": 0.25, "lr": 1e-3})
    again.metrics(2, {"fd_fashion": 40.0, "eval_s": 3.0})
    again.close()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["step", "loss", "lr", "fd_fashion", "eval_s"],
        ["1", "0.5", "0.001", "", ""],
        ["2", "0.25", "0.001", "", ""],
        ["2", "", "", "40", "3"],
    ]


@pytest.mark.filterwarnings("ignore:the .* covariance .* is singular")
def test_latent_runs_are_decoded_and_scored_by_fid(tmp_path):
    """The ImageNet route at toy size: images encoded by a tiny VAE, samples decoded by it, FID in (random)
    Inception features against a reference .npz; the same number as sample_ddp.py + evaluate() on the checkpoint."""
    images, vae = tmp_path / "images", tmp_path / "vae"
    rng = np.random.default_rng(0)
    for i in range(8):
        (images / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / "ab"[i % 2] / f"{i}.png")
    save_tiny_vae(vae)
    weights = save_random_inception(tmp_path / "inception.pth")
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=np.random.default_rng(1).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8))
    flags = ["--eval-every", "2", "--eval-ref", ref, "--eval-weights", weights]
    flags += "--eval-samples 10 --eval-batch-size 5 --eval-steps 2 --eval-cfg-scale 1".split()
    data = ["--model", "DiT-T/4", "--data-path", images, "--vae", vae]
    short = "--image-size 16 --global-batch-size 4 --num-workers 0 --max-steps 2 --lr 1e-2 --ema-decay 0.5".split()
    run("train.py", [*data, *short, *flags, "--results-dir", tmp_path / "run"])
    npz = tmp_path / "s.npz"
    ckpt = tmp_path / "run/checkpoints/0000002.pt"
    run(
        "sample_ddp.py",
        ["--ckpt", ckpt, *"--num-samples 10 --per-proc-batch-size 5 --steps 2 --cfg-scale 1".split(), "--out", npz],
    )
    result = evaluate(ref, npz, "fid", "inception", str(weights), batch_size=5, device="cpu")
    assert np.isfinite(result["metrics"]["fid"])
    assert scores(tmp_path / "run", "fid") == {2: f"{result['metrics']['fid']:.6g}"}
