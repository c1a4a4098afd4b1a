"""The census of bad inputs (docs/reliability.md): every row is one line on stderr, exit code 2, and the directory
it ran in byte for byte as before, the bad file itself included."""

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TRAIN = ["--model", "DiT-T/4", "--global-batch-size", "4", "--num-workers", "0", "--max-steps", "1"]


def write_bad_checkpoints(d: Path) -> None:
    """One file per class of bad checkpoint."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "random.pt").write_bytes(os.urandom(4096))
    (d / "empty.pt").write_bytes(b"")
    whole = io.BytesIO()
    torch.save({"model": {"w": torch.ones(64, 64)}}, whole)
    (d / "cut.pt").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    torch.save({"state_dict": {"net.weight": torch.ones(2)}, "epoch": 3, "global_step": 9}, d / "foreign.pt")
    torch.save({"model": {"w": torch.ones(2)}, "hook": print}, d / "code.pt")  # pickles a Python callable


CHECKPOINTS = {"random.pt": "unreadable", "empty.pt": "unreadable", "cut.pt": "unreadable",
               "code.pt": "needs arbitrary pickled code", "missing.pt": "does not exist"}  # fmt: skip
TOML = {
    "unknown key": ("lr = 1e-4\nlearning_rate = 1e-4\n", "unknown keys ['learning_rate']"),
    "a string for a number": ('lr = "fast"\n', "lr = 'fast' is not a number"),
    "a number for a list": ("adam_betas = 0.9\n", "adam_betas = 0.9 is not a list of numbers"),
    "an unknown choice": ('prediction = "score"\n', "unknown prediction 'score'; valid: eps, x0, v"),
    "γ ≤ 0": ("weighting = 'min_snr'\nsnr_gamma = -1.0\n", "snr_gamma must be > 0"),
    "lr < 0": ("lr = -1e-4\n", "--lr must be a finite number >= 0"),
    "not TOML": ("lr = = 1\n", "--config"),
}


def tree(d: Path) -> dict:
    return {p.relative_to(d): hashlib.sha256(p.read_bytes()).hexdigest() for p in d.rglob("*") if p.is_file()}


def refused(cmd: list[str], cwd: Path, message: str, env: dict = ENV) -> None:
    before = tree(cwd)
    res = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr[-2000:]
    assert lines[0].startswith(f"{Path(cmd[0]).name}: error: ")
    assert tree(cwd) == before  # nothing written, nothing overwritten


@pytest.mark.parametrize("name", [*CHECKPOINTS, "foreign.pt"])
def test_train_resume_from_a_bad_checkpoint(tmp_path, name):
    write_bad_checkpoints(tmp_path / "bad")
    message = CHECKPOINTS.get(name, "is not a training checkpoint of this codebase (it holds ['epoch'")
    cmd = [str(ROOT / "train.py"), *TRAIN, "--resume", f"bad/{name}", "--results-dir", "run"]
    refused(cmd, tmp_path, message)


def test_train_resume_auto_with_a_foreign_file_named_like_a_checkpoint(tmp_path):
    (tmp_path / "run/checkpoints").mkdir(parents=True)
    (tmp_path / "run/checkpoints/0000005.pt").write_bytes(os.urandom(1000))
    cmd = [str(ROOT / "train.py"), *TRAIN, "--resume", "auto", "--results-dir", "run"]
    refused(cmd, tmp_path, "run/checkpoints/0000005.pt is unreadable")


@pytest.mark.parametrize("case", TOML)
def test_train_bad_config(tmp_path, case):
    text, message = TOML[case]
    (tmp_path / "c.toml").write_text(text)
    refused([str(ROOT / "train.py"), *TRAIN, "--config", "c.toml", "--results-dir", "run"], tmp_path, message)


def test_train_batch_that_does_not_divide_by_the_world_size(tmp_path):
    cmd = [str(ROOT / "train.py"), *TRAIN, "--results-dir", "run"]
    refused(cmd, tmp_path, "--global-batch-size 4 does not divide by 3 processes", {**ENV, "WORLD_SIZE": "3"})


@pytest.mark.parametrize("name", [*CHECKPOINTS, "foreign.pt"])
def test_sample_from_a_bad_checkpoint(tmp_path, name):
    write_bad_checkpoints(tmp_path / "bad")
    message = CHECKPOINTS.get(name, "a checkpoint without our training record needs --model")
    cmd = [str(ROOT / "sample_ddp.py"), "--ckpt", f"bad/{name}", "--num-samples", "4", "--out", "s.npz"]
    refused(cmd, tmp_path, message)
