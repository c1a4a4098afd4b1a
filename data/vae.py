"""The Stable Diffusion VAE through diffusers' ``AutoencoderKL``: named releases or a local directory."""

import torch

VAES = {"mse": "stabilityai/sd-vae-ft-mse", "ema": "stabilityai/sd-vae-ft-ema"}
SCALE_FACTOR = 0.18215  # SD's latent scale: z = 0.18215 · sample of the posterior


def load_vae(name: str, device: torch.device | str = "cpu"):
    """``name`` is "mse" (the paper's), "ema", a hub id, or a local directory holding ``config.json`` and
    weights (what ``AutoencoderKL.save_pretrained`` writes). Raises ValueError with one line when it cannot load."""
    from diffusers import AutoencoderKL

    source = VAES.get(name, name)
    try:
        vae = AutoencoderKL.from_pretrained(source, low_cpu_mem_usage=False)  # no accelerate needed
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot load the VAE {source!r} ({str(err).splitlines()[0]}); pass a local directory with "
            f"--vae, or run once online so the hub cache holds it"
        ) from None
    return vae.to(device).eval().requires_grad_(False)
