"""Every output of every script is covered by its stale-temporary clean-up: the temporary file that a write killed
mid-save leaves (``.NAME.XXXX.tmp``) is planted beside every file of a finished run, and a re-run removes them all."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.crash_campaign import JOBS, make_fixture
from tests.processes import launcher

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> Path:
    """The crash campaign's: a 1-step checkpoint, 12 images in 2 classes and a tiny VAE."""
    root = tmp_path_factory.mktemp("fixture")
    make_fixture(root)
    return root


def run(cmd: list) -> None:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def plant(out: Path) -> list[Path]:
    """A killed write's temporary beside every file under ``out``; TensorBoard appends to its own event files, which
    never pass through a temporary."""
    planted = [
        p.with_name(f".{p.name}.k1ll.tmp") for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts
    ]
    for path in planted:
        path.write_bytes(b"half a file")
    return planted


@pytest.mark.parametrize("name", ["train-1", "sample-1", "extract"])
def test_a_rerun_removes_the_temporaries_beside_every_output(fixture, tmp_path, name):
    job, out = JOBS[name], tmp_path / "out"
    cmd = [*launcher(job.nproc), ROOT / job.script, *job.args(fixture, out)]
    run(cmd)
    planted = plant(out)
    assert len(planted) >= 5, planted  # the run wrote its outputs
    run(cmd)
    assert [p.name for p in planted if p.exists()] == []


def test_evaluate_fid_removes_the_temporaries_of_its_json_and_statistics(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", arr_0=images)
    flags = "--metrics fid --feature-extractor fashion --device cpu".split()
    cmd = [sys.executable, ROOT / "evaluate_fid.py", tmp_path / "images.npz", tmp_path / "images.npz", *flags]
    cmd += ["--json", tmp_path / "r.json", "--save-ref-stats", tmp_path / "ref.npz"]
    run(cmd)
    planted = [path for path in plant(tmp_path) if path.name != ".images.npz.k1ll.tmp"]  # an input, not an output
    run(cmd)
    assert sorted(p.name for p in planted if p.exists()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".images.npz.k1ll.tmp", "images.npz", "r.json", "ref.npz"]
