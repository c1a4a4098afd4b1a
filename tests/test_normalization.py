"""Per-channel data normalisation and the per-step latent draw: statistics, round trips, sampling, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data import Scale, TrainingData, open_training_data
from data.latents import MANIFEST, LatentShards, draw_latents, shard_name, write_manifest, write_shard
from data.normalization import Normalization, channel_stats, latent_channel_stats
from diffusion import create_diffusion, edm_timesteps, sample_heun
from sampling import SamplingSpec, quantize

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_channel_stats_match_numpy_and_apply_standardises():
    rng = np.random.default_rng(0)
    x = (
        rng.normal(size=(50, 3, 4, 4)) * np.array([1.0, 2.0, 0.5])[None, :, None, None]
        + np.array([0.0, -1.0, 3.0])[None, :, None, None]
    )
    norm = channel_stats(torch.from_numpy(x[i : i + 7]) for i in range(0, 50, 7))  # uneven batches
    np.testing.assert_allclose(norm.mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(norm.std, x.std(axis=(0, 2, 3)), rtol=1e-12)
    z = norm.apply(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, rtol=1e-12)
    torch.testing.assert_close(norm.invert(norm.apply(torch.from_numpy(x))), torch.from_numpy(x))


def test_fashion_statistics_and_the_pixel_round_trip_gives_back_the_images():
    """Fashion-MNIST on a black 32×32 canvas in [−1, 1] has mean −0.562 and std 0.664, the figures of
    docs/training.md ("Normalisation"). Normalised images, inverted and quantised by DiT's rule, are the original
    uint8 pixels exactly."""
    data = open_training_data(None, data_norm="channel")
    assert data.transform.mean[0] == pytest.approx(-0.562, abs=5e-4)
    assert data.transform.std[0] == pytest.approx(0.664, abs=5e-4)
    images = data.dataset.images[:200]  # uint8 [200, 1, 32, 32]
    x0 = data.prepare(images.float() / 127.5 - 1, torch.Generator(), slice(0, 200), 200)
    assert abs(float(x0.mean())) < 0.1 and abs(float(x0.std()) - 1) < 0.1
    spec = SamplingSpec("ViT-T/4", {}, "x0", "cosine", 1000, 10, 10, None, data.transform, "ours")
    back = quantize(spec.to_data(x0))  # uint8 NHWC
    assert np.array_equal(back[..., 0], images[:, 0].numpy())


def test_latent_statistics_are_those_of_the_drawn_latents():
    """latent_channel_stats' closed form (E[z] = E[μ], E[z²] = E[μ²] + E[σ²] over both flips) against the empirical
    moments of many draws made by draw_latents itself."""
    rng = np.random.default_rng(1)
    m = np.zeros((6, 2, 2, 2, 2, 2))
    m[:, :, 0] = rng.normal(size=(6, 2, 2, 2, 2)) + np.array([1.0, -2.0])[None, None, :, None, None]
    m[:, :, 1] = np.abs(rng.normal(size=(6, 2, 2, 2, 2))) * np.array([0.3, 1.5])[None, None, :, None, None]
    norm = latent_channel_stats([m[:4], m[4:]])
    moments = torch.from_numpy(m).float().repeat(4000, 1, 1, 1, 1, 1)
    z = draw_latents(moments, 1.0, torch.Generator().manual_seed(0), slice(None), len(moments)).double()
    np.testing.assert_allclose(z.mean(dim=(0, 2, 3)).numpy(), norm.mean, atol=0.02)
    np.testing.assert_allclose(z.std(dim=(0, 2, 3)).numpy(), norm.std, rtol=0.01)


def test_the_latent_draw_has_the_posterior_statistics_and_fair_flips():
    """Over many draws of one image: each flip view occurs at rate ½, and within a view the draw has mean s·μ and
    variance s²·σ². With normalisation, prepare() gives (μ + σ·ε − m)/sd: mean (μ − m)/sd, variance σ²/sd². A draw
    that dropped the posterior noise (z = s·μ) fails the variance check."""
    n, s = 40_000, 0.5
    mu = torch.tensor([[4.0, -1.0], [-4.0, 2.0]])  # view (image, flip) × channel; the views differ in sign of ch 0
    sigma = torch.tensor([[0.5, 1.0], [0.25, 2.0]])
    one = torch.stack([torch.stack([mu[v], sigma[v]]) for v in range(2)])[..., None, None]  # [2, 2, 2, 1, 1]
    batch = one.expand(n, *one.shape).contiguous()
    z = draw_latents(batch, s, torch.Generator().manual_seed(3), slice(None), n)[..., 0, 0]  # [n, 2]
    flipped = z[:, 0] < 0
    assert abs(float(flipped.double().mean()) - 0.5) < 4 * 0.5 / n**0.5
    for view, rows in ((0, ~flipped), (1, flipped)):
        torch.testing.assert_close(z[rows].mean(0), s * mu[view], atol=4 * s * 2.0 / rows.sum() ** 0.5, rtol=0)
        torch.testing.assert_close(z[rows].var(0), (s * sigma[view]) ** 2, rtol=0.05, atol=0)

    norm = Normalization((1.0, -0.5), (2.0, 0.5))
    data = TrainingData(None, "latent", (2, 1, 1), 1, "test", transform=norm)
    x0 = data.prepare(batch, torch.Generator().manual_seed(3), slice(None), n)[..., 0, 0]
    m, sd = torch.tensor(norm.mean), torch.tensor(norm.std)
    for view, rows in ((0, ~flipped), (1, flipped)):  # same generator seed: the same flips and noise as above
        torch.testing.assert_close(x0[rows].mean(0), (mu[view] - m) / sd, atol=0.05, rtol=0)
        torch.testing.assert_close(x0[rows].var(0), (sigma[view] / sd) ** 2, rtol=0.05, atol=0)


def test_normalised_and_plain_models_sample_to_the_same_pixel_range(oracle):
    """The exact denoiser of data N(m, s²) in plain units, and the exact denoiser of the same data normalised
    (N(0, 1)), sampled by Heun and mapped back through the checkpoint's spec, give the same distribution."""
    m, s = -0.4, 0.3
    d = create_diffusion(noise_schedule="cosine", prediction="x0", weighting="const", learn_sigma=False)
    noise = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    plain = SamplingSpec("ViT-T/4", {}, "x0", "cosine", 1000, 1, None, None, Scale(1.0), "ours")
    normed = SamplingSpec("ViT-T/4", {}, "x0", "cosine", 1000, 1, None, None, Normalization((m,), (s,)), "ours")
    ts = edm_timesteps(d, 50)
    a = plain.to_data(sample_heun(oracle(d.alphas_cumprod, "x0", [m], s), noise, ts, d))
    b = normed.to_data(sample_heun(oracle(d.alphas_cumprod, "x0", [0.0], 1.0), noise, ts, d))
    for x in (a, b):
        assert float(x.mean()) == pytest.approx(m, abs=0.02)
        assert float(x.std()) == pytest.approx(s, rel=0.03)
    torch.testing.assert_close(a, b, atol=0.01, rtol=0)  # the same noise gives (nearly) the same images


@pytest.mark.parametrize(
    ("mean", "std", "message"),
    [
        ((0.0,), (1.0, 1.0), "one mean and one std per channel"),
        ((float("nan"),), (1.0,), "must be finite"),
        ((0.0,), (0.0,), "std > 0"),
    ],
)
def test_bad_statistics_are_refused(mean, std, message):
    with pytest.raises(ValueError, match=message):
        Normalization(mean, std)


def latent_dir(path: Path, normalization=None) -> Path:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(8, 2, 2, 4, 8, 8))
    m[:, :, 1] = np.abs(m[:, :, 1]) * 0.1
    write_shard(path / shard_name(0), m)
    meta = {"normalization": normalization} if normalization is not None else {}
    meta |= {"vae": "test", "scale_factor": 0.5, "image_size": 64, "latent_shape": [4, 8, 8]}
    write_manifest(path, [{"file": shard_name(0), "labels": [0] * 8}], classes=["a"], **meta)
    return path


def train(args: list[str]) -> subprocess.CompletedProcess:
    flags = "--model DiT-T/4 --global-batch-size 4 --max-steps 1 --num-workers 0".split()
    cmd = [sys.executable, str(ROOT / "train.py"), *flags, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        (None, "has no normalisation statistics"),
        ({"mean": [0.0] * 3, "std": [1.0] * 3}, "have 3 channels, the data 4"),
        ({"mean": [0.0] * 4, "std": [1.0, 1.0, float("inf"), 1.0]}, "must be finite"),
    ],
)
def test_missing_or_bad_manifest_statistics_are_one_line_and_exit_2(tmp_path, stats, message):
    data = ["--data-path", str(latent_dir(tmp_path, stats)), "--data-norm", "channel"]
    res = train([*data, "--results-dir", str(tmp_path / "run")])
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_normalised_checkpoint_carries_its_statistics_and_sampling_needs_them(tmp_path):
    """Latents normalised with the manifest's statistics: the checkpoint records them, sampling inverts them, and a
    checkpoint whose record lost them cannot be sampled as if they were not there."""
    stats = latent_channel_stats([np.load(latent_dir(tmp_path, {}) / shard_name(0))]).record()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "normalization": stats}))
    res = train(["--data-path", str(tmp_path), "--data-norm", "channel", "--results-dir", str(tmp_path / "run")])
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = tmp_path / "run/checkpoints/0000001.pt"
    state = torch.load(ckpt, weights_only=True)
    assert state["data_transform"] == {"name": "channel", **stats}
    assert LatentShards(tmp_path).meta["normalization"] == stats
    state["data_transform"] = {"name": "channel", "mean": stats["mean"][:2], "std": stats["std"][:2]}
    torch.save(state, tmp_path / "broken.pt")
    flags = "--num-samples 2 --steps 2 --vae none".split()
    cmd = [sys.executable, str(ROOT / "sample_ddp.py"), "--ckpt", str(tmp_path / "broken.pt"), *flags]
    cmd += ["--out", str(tmp_path / "s.npz")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 2 and "have 2 channels, the data 4" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "s.npz").exists()


def test_resuming_with_another_normalisation_is_refused(tmp_path):
    run = ["--results-dir", str(tmp_path / "run")]
    assert train(run).returncode == 0
    ckpt = sorted((tmp_path / "run/checkpoints").iterdir())[-1]  # into another run directory, or the run's own
    res = train(
        ["--results-dir", str(tmp_path / "b"), "--data-norm", "channel", "--max-steps", "2", "--resume", str(ckpt)]
    )
    assert res.returncode == 2 and "was trained with data normalisation None" in res.stderr
    res = train([*run, "--data-norm", "channel", "--max-steps", "2", "--resume", "auto"])
    assert res.returncode == 2 and "holds a run with data_norm = 'none', and this one has 'channel'" in res.stderr
