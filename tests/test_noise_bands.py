"""The per-noise-band x0-MSE that train.py logs: the bands, the x0 error of each target, and the logged columns."""

import csv
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from data.latents import shard_name, write_manifest, write_shard
from diffusion import create_diffusion
from diffusion.bands import BAND_NAMES, SNR_EDGES, band_of_snr
from tests.processes import launcher

ROOT = Path(__file__).resolve().parents[1]


def test_band_edges_and_names():
    assert BAND_NAMES == ("snr_lt_0.01", "snr_0.01-0.1", "snr_0.1-1", "snr_1-10", "snr_10-100", "snr_ge_100")
    # Each band includes its lower edge.
    snr = np.array([1e-6, 0.00999, 0.01, 0.5, 1.0, 9.9, 10.0, 99.0, 100.0, 1e5])
    assert band_of_snr(snr).tolist() == [0, 0, 1, 2, 3, 3, 4, 4, 5, 5]
    assert len(SNR_EDGES) + 1 == len(BAND_NAMES)


def test_cosine_band_edges_fall_where_the_closed_form_puts_them():
    """On the cosine schedule SNR(τ) = cot²(π/2·(τ + s)/(1 + s)); the edge SNR = e sits at
    τ = (1 + s)·(2/π)·arctan(1/√e) − s. The band index steps up exactly after those t."""
    d = create_diffusion(noise_schedule="cosine", prediction="x0", weighting="const", learn_sigma=False)
    bands = band_of_snr(d.snr)
    s = 0.008
    for k, edge in enumerate(SNR_EDGES):
        tau = (1 + s) * (2 / math.pi) * math.atan(1 / math.sqrt(edge)) - s
        # Discrete ᾱ_t is the continuous ᾱ((t+1)/T) (β_t = 1 − ᾱ((t+1)/T)/ᾱ(t/T), cumulated), so t = 1000·τ − 1.
        t_edge = 1000 * tau - 1
        assert bands[int(math.floor(t_edge)) - 1] == k + 1  # the cleaner side of the edge
        assert bands[int(math.ceil(t_edge)) + 1] == k


@pytest.mark.parametrize("prediction", ["x0", "eps", "v"])
def test_x0_mse_of_a_zero_model_is_the_closed_form(prediction):
    """A model that outputs 0 implies x̂0 = 0 (x0), x_t/√ᾱ (ε) or √ᾱ·x_t (v); the x0 error is then mean x0²,
    (1 − ᾱ)/ᾱ·mean ε², or mean((x0 − ᾱ·x0 − √(ᾱ(1 − ᾱ))·ε)²), written out here from x_t = √ᾱ·x0 + √(1 − ᾱ)·ε."""
    d = create_diffusion(noise_schedule="cosine", prediction=prediction, weighting="min_snr", learn_sigma=False)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 2, 4, 4, generator=g), torch.randn(6, 2, 4, 4, generator=g)
    t = torch.tensor([0, 100, 400, 700, 950, 999])
    out = d.training_losses(lambda x, t, y=None: torch.zeros_like(x), x0, t, noise=eps)["x0_mse"]
    a = torch.tensor(d.alphas_cumprod, dtype=torch.float64)[t].reshape(-1, 1, 1, 1)
    x0d, epsd = x0.double(), eps.double()
    expected = {
        "x0": x0d**2,
        "eps": (1 - a) / a * epsd**2,
        "v": (x0d - a * x0d - (a * (1 - a)).sqrt() * epsd) ** 2,
    }[prediction].mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.double(), expected, rtol=2e-4, atol=1e-6)


def run_train(args, nproc):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [*launcher(nproc), str(ROOT / "train.py"), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.parametrize("nproc", [1, 2])
def test_logged_band_mse_of_a_zero_model_is_the_bands_mean_x0_squared(tmp_path, nproc):
    """DiT's output is exactly zero at init (adaLN-Zero) and lr 0 keeps it there, so its x̂0 is 0 and every band's
    logged x0-MSE is that band's mean x0². With latents of posterior mean ±c and std 0, x0 = 0.5·(±c) everywhere,
    so every band's mean x0² is (0.5·c)², whichever images, flips and timesteps were drawn, on 1 or 2 ranks."""
    c = 1.5
    moments = np.zeros((16, 2, 2, 4, 8, 8))
    moments[:, :, 0] = c * np.sign(np.random.default_rng(0).normal(size=(16, 2, 4, 8, 8)))
    write_shard(tmp_path / shard_name(0), moments)
    shards = [{"file": shard_name(0), "labels": [i % 2 for i in range(16)]}]
    meta = {"vae": "test", "scale_factor": 0.5, "image_size": 64, "latent_shape": [4, 8, 8]}
    write_manifest(tmp_path, shards, classes=["a", "b"], **meta)
    run_dir = tmp_path / "run"
    flags = "--model DiT-T/4 --weighting const --lr 0 --global-batch-size 16 --max-steps 4 --log-every 2".split()
    flags += "--num-workers 0".split()
    run_train([*flags, "--data-path", str(tmp_path), "--results-dir", str(run_dir)], nproc)
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    bands = ["snr_lt_0.01", "snr_0.01-0.1", "snr_0.1-1", "snr_1-10", "snr_10-100", "snr_ge_100"]  # decades of SNR
    columns = [f"x0_mse_{name}" for name in bands]
    assert list(rows[0])[-6:] == columns
    values = [float(r[col]) for r in rows for col in columns if r[col] != "nan"]
    assert len(values) >= 6  # 32 draws per logged interval: most bands are hit
    np.testing.assert_allclose(values, (0.5 * c) ** 2, rtol=1e-6)
