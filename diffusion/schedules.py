"""Noise schedules (β_t for t = 0..T-1) and timestep respacing."""

import math

import numpy as np

SCHEDULES = ("linear", "cosine", "scaled_linear")


def betas_for_schedule(name: str, num_steps: int) -> np.ndarray:
    """β_t, float64, length ``num_steps``.

    - linear (ADM/DiT): β linear from 1e-4 to 0.02, both scaled by 1000/T so any T keeps the same ᾱ curve.
    - cosine (Nichol & Dhariwal 2021): ᾱ(τ) = cos²(π/2 · (τ + s)/(1 + s)), s = 0.008,
      β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T), 0.999).
    - scaled_linear (Stable Diffusion): √β linear from √0.00085 to √0.012.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    if num_steps < 2:
        raise ValueError(f"diffusion_steps must be >= 2, got {num_steps}")
    if name == "linear":
        if num_steps <= 20:
            raise ValueError(f"the linear schedule scales β_T = 0.02·1000/T and needs T > 20, got T={num_steps}")
        scale = 1000 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if name == "scaled_linear":
        return np.linspace(0.00085**0.5, 0.012**0.5, num_steps, dtype=np.float64) ** 2

    def alpha_bar(tau: float) -> float:
        return math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2

    ratios = [alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps) for i in range(num_steps)]
    return np.minimum(1 - np.array(ratios, dtype=np.float64), 0.999)


def space_timesteps(num_steps: int, spec: str | int) -> list[int]:
    """The subset of {0..T-1} that a respaced sampler visits, as DiT/ADM define it.

    ``""`` keeps all T steps. ``"N"`` (or a list ``"N1,N2,..."`` of per-section counts) takes N steps evenly
    spaced over [0, T-1], rounding to integers, both ends included. ``"ddimN"`` takes range(0, T, stride)
    for the smallest stride in 1..T-1 that gives exactly N steps, and fails if none does.
    """
    spec = str(spec).strip()
    if spec == "":
        return list(range(num_steps))
    if spec.startswith("ddim"):
        try:
            n = int(spec[4:])
        except ValueError:
            raise ValueError(f"bad timestep respacing {spec!r}; expected e.g. 'ddim50'") from None
        _check_count(n, num_steps, spec)
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == n:
                return list(range(0, num_steps, stride))
        raise ValueError(f"cannot take exactly {n} evenly strided steps from {num_steps} ({spec!r})")
    try:
        counts = [int(c) for c in spec.split(",")]
    except ValueError:
        raise ValueError(f"bad timestep respacing {spec!r}; expected '', 'N', 'N1,N2,...' or 'ddimN'") from None
    _check_count(sum(counts), num_steps, spec)
    size, extra = divmod(num_steps, len(counts))
    steps, start = [], 0
    for i, count in enumerate(counts):
        section = size + (1 if i < extra else 0)
        if count > section:
            raise ValueError(f"respacing {spec!r}: section {i} has {section} steps, cannot take {count}")
        if count < 1:
            raise ValueError(f"respacing {spec!r}: every section needs at least 1 step")
        stride = (section - 1) / (count - 1) if count > 1 else 1
        position = 0.0  # accumulated, not j·stride: the two round .5 cases differently, and DiT accumulates
        for _ in range(count):
            steps.append(start + round(position))
            position += stride
        start += section
    return sorted(set(steps))


def _check_count(n: int, num_steps: int, spec: str) -> None:
    if n < 1:
        raise ValueError(f"respacing {spec!r} asks for {n} steps; need at least 1")
    if n > num_steps:
        raise ValueError(f"respacing {spec!r} asks for {n} steps but the diffusion has only T={num_steps}")
