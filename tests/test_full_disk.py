"""A full disk during a checkpoint save and during the .npz assembly: one line naming the file, exit code 1, the
previous file intact and nothing half-written under a final name. The disk is a tmpfs sized from a first run."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.processes import launcher
from training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
PAGE = 4096
TRAIN = "--model DiT-T/4 --global-batch-size 4 --num-workers 0 --ckpt-every 1 --keep-checkpoints 0 --lr 1e-2".split()


def pages(directory: Path) -> int:
    """Bytes a tmpfs needs for the files under ``directory`` (whole pages per file)."""
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in directory.rglob("*") if p.is_file())


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size)``: a tmpfs of ``size`` bytes at tmp_path/disk (root only), unmounted afterwards."""
    mounted = []

    def mount(size: int) -> Path:
        disk = tmp_path / "disk"
        disk.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True)
        if res.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", str(disk)], check=True)


def run(script: str, args: list[str], expect: int) -> subprocess.CompletedProcess:
    res = subprocess.run([*launcher(), str(ROOT / script), *args], capture_output=True, text=True, env=ENV)
    assert res.returncode == expect, res.stderr[-3000:]
    return res


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(latents, tmp_path, small_disk):
    ref = tmp_path / "ref"
    run("train.py", [*TRAIN, "--data-path", str(latents), "--max-steps", "1", "--results-dir", str(ref)], 0)
    one = ref / "checkpoints/0000001.pt"
    # room for everything of step 1 and half of the next checkpoint
    disk = small_disk(pages(ref) + 16 * PAGE + one.stat().st_size // 2)
    res = run("train.py", [*TRAIN, "--data-path", str(latents), "--max-steps", "2", "--results-dir", str(disk)], 1)
    last = res.stderr.strip().splitlines()[-1]  # after the progress bar
    target = disk / "checkpoints/0000002.pt"
    assert last.startswith(f"train.py: error: cannot write {target}") and "is kept" in last, res.stderr
    assert res.stderr.count("error") == 1
    assert not target.exists() and not leftovers(disk)
    a, b = load_checkpoint(one), load_checkpoint(disk / "checkpoints/0000001.pt")
    assert all(torch.equal(a[part][k], b[part][k]) for part in ("model", "ema") for k in a[part])


def test_a_full_disk_during_the_npz_assembly_writes_no_npz(tmp_path, small_disk):
    run_dir = tmp_path / "run"
    run("train.py", [*TRAIN, "--max-steps", "1", "--results-dir", str(run_dir)], 0)
    flags = "--num-samples 64 --per-proc-batch-size 16 --sampler ddpm --steps 2".split()
    sample = ["--ckpt", str(run_dir / "checkpoints/0000001.pt"), *flags]
    ref = tmp_path / "ref"
    run("sample_ddp.py", [*sample, "--out", str(ref / "s.npz")], 0)
    npz = (ref / "s.npz").stat().st_size
    shards = pages(ref / "s.npz.shards")
    disk = small_disk(shards + npz // 2)  # the shards fit, the .npz does not
    res = run("sample_ddp.py", [*sample, "--out", str(disk / "s.npz")], 1)
    last = res.stderr.strip().splitlines()[-1]  # after the progress bars
    assert last.startswith(f"sample_ddp.py: error: cannot write {disk / 's.npz'}"), res.stderr
    assert "No space left on device" in last and res.stderr.count("error") == 1
    assert not (disk / "s.npz").exists() and not leftovers(disk)
    assert pages(disk / "s.npz.shards") == shards  # every shard kept: a re-run with room only assembles
