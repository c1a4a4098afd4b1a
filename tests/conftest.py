"""Shared test helpers: exact (Bayes-optimal) denoisers for Gaussian data, used as models; tiny latent shards."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from data.latents import shard_name, write_manifest, write_shard

torch.set_flush_denormal(True)
if os.environ.get("PYTEST_XDIST_WORKER"):  # one core per test worker, for its scripts too
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


class GaussianOracle:
    """The exact model for data x0 ~ N(mu_c, s²I) per class c (a single class if ``mus`` has one entry).

    Given x_t ~ N(√ᾱ·mu_c, (ᾱs² + 1 − ᾱ)I) per class, E[x0 | x_t, c] = mu_c + √ᾱ·s²/(ᾱs² + 1 − ᾱ)·(x_t − √ᾱ·mu_c);
    the unconditional (null-label) answer mixes the classes with equal priors, weighted by p(c | x_t).
    It returns what a trained network would: ε, x0 or v (and zeros for variance channels), and counts calls.
    """

    def __init__(self, alphas_cumprod: np.ndarray, prediction: str, mus, s: float, learn_sigma: bool = False):
        self.acp = torch.tensor(alphas_cumprod, dtype=torch.float64)
        self.prediction, self.mus, self.s, self.learn_sigma = prediction, list(mus), s, learn_sigma
        self.calls = 0

    def __call__(self, x, t, y=None):
        self.calls += 1
        x = x.double()
        a = self.acp[t].reshape(-1, *([1] * (x.ndim - 1)))
        var = a * self.s**2 + 1 - a
        gain = a.sqrt() * self.s**2 / var
        per_class = [mu + gain * (x - a.sqrt() * mu) for mu in self.mus]
        if len(self.mus) == 1:
            x0 = per_class[0]
        else:
            loglik = torch.stack([-((x - a.sqrt() * mu) ** 2 / (2 * var)).flatten(1).sum(1) for mu in self.mus], 1)
            post = torch.softmax(loglik, dim=1)  # p(c | x_t), equal priors
            mixed = sum(post[:, c].reshape(a.shape) * per_class[c] for c in range(len(self.mus)))
            if y is None:
                x0 = mixed
            else:
                chosen = torch.stack(per_class + [mixed], 0)  # label len(mus) is the null class
                x0 = chosen[y, torch.arange(x.shape[0])]
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        out = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[self.prediction]
        if self.learn_sigma:
            out = torch.cat([out, torch.zeros_like(out)], dim=1)
        return out.float()


@pytest.fixture
def oracle():
    return GaussianOracle


@pytest.fixture(scope="module")
def latents(tmp_path_factory) -> Path:
    """24 random 'images' as moments [2 flips, (mean, std), 4, 8, 8] in two shards, 3 classes."""
    d = tmp_path_factory.mktemp("latents")
    rng = np.random.default_rng(0)
    shards = []
    for k, n in enumerate((16, 8)):
        m = rng.normal(size=(n, 2, 2, 4, 8, 8))
        m[:, :, 1] = np.abs(m[:, :, 1]) * 0.1
        write_shard(d / shard_name(k), m)
        shards.append({"file": shard_name(k), "labels": rng.integers(0, 3, n).tolist()})
    meta = {"vae": "test", "scale_factor": 0.5, "image_size": 64, "latent_shape": [4, 8, 8]}
    write_manifest(d, shards, classes=["a", "b", "c"], **meta)
    return d
