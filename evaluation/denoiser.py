"""The denoiser's own error per noise level: unweighted x0-MSE on held-out data with fixed noise.

Whatever the target (ε, x0, v) and the weighting a model was trained with, it implies an x̂0 at every (x_t, t).
``x0_errors`` measures mean‖x0 − x̂0‖² at chosen t, in the data's own units (pixels in [−1, 1], or unscaled
latents), so two runs with other weightings, targets or normalisations are compared on the same scale. The noise
is drawn once from a seed, so every checkpoint of every run sees the same (x0, ε) pairs.

``floors`` gives three references that need no model: predicting zero (mean x0²), predicting the data mean (the
total variance) and predicting the class-conditional mean (the within-class variance). A class-conditional
denoiser at t → T can do no better than the last; one above it has not learned the coarse layout yet.
"""

import torch

from data.fashion_mnist import FashionMNIST
from data.latents import LatentShards
from diffusion.gaussian_diffusion import GaussianDiffusion

# t on the 1000-step schedule; on the cosine schedule these span SNR ≈ 4e-5 (t = 990) to 1.6e3 (t = 10).
DEFAULT_TIMESTEPS = (10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 850, 900, 950, 990)


def held_out(data_path: str | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [n, C, H, W] float32 in data units, labels [n]): the first ``n`` Fashion-MNIST test images (padded to
    32×32, in [−1, 1]), or the first ``n`` images of a latent directory (posterior means of the unflipped images;
    pass a directory extracted from held-out images)."""
    if data_path is None:
        ds = FashionMNIST("test")
    else:
        ds = LatentShards(data_path)
    if not 2 <= n <= len(ds):
        raise ValueError(f"--num-images {n} must be within 2..{len(ds)} (the held-out set's size)")
    items = [ds[i] for i in range(n)]
    x = torch.stack([item if data_path is None else item[0, 0] for item, _ in items]).float()
    return x, torch.tensor([label for _, label in items])


def floors(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The x0-MSE of three model-free predictions on (x, y): zero, the set's mean image, each class's mean image."""
    x = x.double()
    class_mean = torch.zeros_like(x)
    for c in y.unique():
        class_mean[y == c] = x[y == c].mean(0)
    return {
        "zero": float((x**2).mean()),
        "mean": float(((x - x.mean(0)) ** 2).mean()),
        "class_mean": float(((x - class_mean) ** 2).mean()),
    }


@torch.no_grad()
def x0_errors(
    model,
    diffusion: GaussianDiffusion,
    x: torch.Tensor,
    y: torch.Tensor,
    timesteps,
    from_data,
    to_data,
    seed: int = 0,
    batch_size: int = 250,
) -> dict[int, float]:
    """{t: mean‖x − to_data(x̂0)‖²} for the model ``model(x_t, t, y)`` at each t, with x0 = from_data(x) in the
    model's space and one fixed ε ~ N(0, I) per image drawn from ``seed`` (the same ε at every t)."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for t in timesteps:
        total = 0.0
        for i in range(0, len(x), batch_size):
            xb, yb, nb = x[i : i + batch_size], y[i : i + batch_size], noise[i : i + batch_size]
            tb = torch.full((len(xb),), int(t), dtype=torch.long)
            x_t = diffusion.q_sample(from_data(xb), tb, nb)
            x0_hat, _, _ = diffusion.predict(model, x_t, tb, {"y": yb})
            total += float(((xb.double() - to_data(x0_hat).double()) ** 2).sum())
        out[int(t)] = total / x.numel()
    return out
