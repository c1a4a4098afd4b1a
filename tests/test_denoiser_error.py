"""The denoiser-error instrument: floors on a known toy set, closed forms for a zero model and the exact denoiser,
and the tool end to end (resumable rows, the heat map, bad input)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.normalization import Normalization
from diffusion import create_diffusion
from evaluation.denoiser import floors, x0_errors

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
COSINE = create_diffusion(noise_schedule="cosine", prediction="x0", weighting="const", learn_sigma=False)


def test_floors_of_a_toy_set():
    """Class 0: 4 flat images, two at a + d and two at a − d; class 1: 2 flat images at b. By hand: zero floor
    (4a² + 4d² + 2b²)/6 (the cross terms cancel), data-mean floor = the variance of the 6 values, and the
    class-mean floor 4d²/6 (class 1 is exact)."""
    a, d, b = 0.5, 0.2, -1.0
    values = [a + d, a + d, a - d, a - d, b, b]
    x = torch.tensor(values).reshape(6, 1, 1, 1).expand(6, 2, 3, 3)
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    got = floors(x, y)
    assert got["zero"] == pytest.approx((4 * a**2 + 4 * d**2 + 2 * b**2) / 6)
    assert got["mean"] == pytest.approx(float(np.var(values)))
    assert got["class_mean"] == pytest.approx(4 * d**2 / 6)


def zero_model(x, t, y=None):
    return torch.zeros_like(x)


def test_a_zero_model_scores_the_zero_floor_and_with_normalisation_the_mean():
    """x̂0 = 0 in the model's space is 0 in plain pixels, but the channel mean m after inverting a normalisation, so
    the error is mean x² at every t, or mean (x − m)²."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 2, 4, 4, generator=g) * 0.5 + 0.3, torch.zeros(20, dtype=torch.long)
    plain = x0_errors(zero_model, COSINE, x, y, [0, 500, 999], lambda z: z, lambda z: z, batch_size=7)
    assert all(v == pytest.approx(float((x.double() ** 2).mean()), rel=1e-6) for v in plain.values())
    norm = Normalization((0.3, -0.1), (0.5, 2.0))
    normed = x0_errors(zero_model, COSINE, x, y, [0, 500, 999], norm.apply, norm.invert)
    m = torch.tensor([0.3, -0.1]).reshape(1, 2, 1, 1)
    assert all(v == pytest.approx(float(((x - m).double() ** 2).mean()), rel=1e-6) for v in normed.values())


def test_the_exact_denoiser_scores_the_gaussian_mmse(oracle):
    """For x0 ~ N(μ_c, s²I) the conditional posterior mean has error s²(1 − ᾱ)/(ᾱs² + 1 − ᾱ) per dimension."""
    s, mus = 0.4, [-0.5, 0.5]
    g = torch.Generator().manual_seed(1)
    y = torch.arange(4000) % 2
    x = torch.tensor(mus)[y].reshape(-1, 1, 1, 1) + s * torch.randn(4000, 1, 2, 2, generator=g)
    ts = [10, 300, 600, 900, 990]
    got = x0_errors(oracle(COSINE.alphas_cumprod, "x0", mus, s), COSINE, x, y, ts, lambda z: z, lambda z: z)
    for t in ts:
        a = COSINE.alphas_cumprod[t]
        assert got[t] == pytest.approx(s**2 * (1 - a) / (a * s**2 + 1 - a), rel=0.05)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, weighting in (("x0-const-s0", "const"), ("x0-min_snr-s0", "min_snr")):
        flags = "--model DiT-T/4 --max-steps 2 --ckpt-every 1 --keep-checkpoints 0 --global-batch-size 8".split()
        flags += "--num-workers 0 --lr 1e-2".split()
        args = [*flags, "--weighting", weighting, "--results-dir", str(root / name)]
        res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=ENV)
        assert res.returncode == 0, res.stderr[-2000:]
        out.append(root / name)
    return out


def tool(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "tools/denoiser_error.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def test_the_tool_writes_one_row_per_checkpoint_and_t_resumes_and_draws(runs, tmp_path):
    args = [*map(str, runs), "--out", str(tmp_path), "--num-images", "16", "--timesteps", "100,900"]
    res = tool(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "denoiser.csv").open()))
    assert len(rows) == 2 * 2 * 2  # runs × checkpoints × t
    assert {r["run"] for r in rows} == {"x0-const-s0", "x0-min_snr-s0"}
    assert all(float(r["floor_class_mean"]) < float(r["floor_mean"]) < float(r["floor_zero"]) for r in rows)
    assert (tmp_path / "denoiser_heatmap.png").stat().st_size > 10_000
    # A re-run measures nothing; with one checkpoint's rows removed, it measures that checkpoint alone, as before.
    path = tmp_path / "denoiser.csv"
    before = path.read_bytes()
    res = tool(*args)
    assert res.returncode == 0 and " step " not in res.stdout and path.read_bytes() == before
    first = rows[0]
    kept = [r for r in rows if (r["run"], r["step"]) != (first["run"], first["step"])]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(first))
        writer.writeheader()
        writer.writerows(kept)
    res = tool(*args)
    measured = [line.split(":")[0] for line in res.stdout.splitlines() if " step " in line]
    assert res.returncode == 0 and measured == [f"{first['run']} step {first['step']}"]
    assert list(csv.DictReader(path.open())) == kept + [r for r in rows if r not in kept]


def test_a_run_without_checkpoints_is_one_line_and_exit_2(tmp_path):
    res = tool(str(tmp_path / "nothing"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "has no checkpoints" in res.stderr


def test_the_tool_reads_latent_directories_in_unscaled_latent_units(latents, tmp_path):
    """On latents the held-out x is the posterior mean of each unflipped image, compared in the units of z (the
    checkpoint's scale factor undone), so the zero floor is mean μ² of the stored moments."""
    run = tmp_path / "x0-const-s0"
    flags = "--model DiT-T/4 --weighting const --max-steps 1 --global-batch-size 4 --num-workers 0".split()
    args = [*flags, "--data-path", str(latents), "--results-dir", str(run)]
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    paths = ["--out", str(tmp_path / "out"), "--data-path", str(latents)]
    res = tool(str(run), *paths, "--num-images", "8", "--timesteps", "500")
    assert res.returncode == 0, res.stderr[-2000:]
    (row,) = csv.DictReader((tmp_path / "out/denoiser.csv").open())
    mu = np.concatenate([np.load(p)[:, 0, 0] for p in sorted(latents.glob("shard-*.npy"))])[:8].astype(np.float64)
    assert float(row["floor_zero"]) == pytest.approx(float((mu**2).mean()), rel=1e-5)
    # DiT's output is exactly zero at init and one step of lr 1e-4 barely moves it: x̂0 ≈ 0, error ≈ the zero floor.
    assert float(row["x0_mse"]) == pytest.approx(float(row["floor_zero"]), rel=0.05)
