"""The ADM suite's arithmetic: streaming Gaussian statistics, the Fréchet distance, the Inception Score, and
k-nearest-neighbour precision and recall (Kynkäänniemi et al. 2019)."""

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch


@dataclass
class Gaussian:
    """Mean [D] and covariance [D, D] (float64) of features, and how many rows they came from (None: unknown)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None = None


class RunningGaussian:
    """Mean and unbiased covariance (divided by N − 1, as ADM's ``np.cov``) of rows fed batch by batch.

    Batches are merged in float64 by Chan et al.'s rule, so no feature is kept and no sum of squares cancels:
    with n = n_a + n_b and δ = mean_b − mean_a, mean = mean_a + δ·n_b/n and M2 = M2_a + M2_b + δδᵀ·n_a·n_b/n,
    where M2 is the scatter Σ (x − mean)(x − mean)ᵀ; the covariance is M2 / (n − 1).
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of x [B, D]."""
        x = x.to(self.mean.device, torch.float64)
        n_b = x.shape[0]
        mean_b = x.mean(0)
        centred = x - mean_b
        delta = mean_b - self.mean
        n = self.count + n_b
        self.mean += delta * (n_b / n)
        self.m2 += centred.T @ centred + torch.outer(delta, delta) * (self.count * n_b / n)
        self.count = n

    def gaussian(self) -> Gaussian:
        return Gaussian(self.mean.cpu().numpy(), (self.m2 / (self.count - 1)).cpu().numpy(), self.count)


def _singular(eigenvalues: np.ndarray) -> bool:
    """Numerically rank deficient by numpy's ``matrix_rank`` rule: an eigenvalue ≤ D·ε·λ_max."""
    return eigenvalues.min() <= len(eigenvalues) * np.finfo(np.float64).eps * abs(eigenvalues).max()


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, names: tuple[str, str] = ("first", "second")) -> float:
    """tr √(Σ1Σ2) for covariances Σ1, Σ2, in float64 (``names`` name them in the warning).

    Σ1Σ2 is similar to the symmetric PSD matrix M = Σ1^½ Σ2 Σ1^½, so tr √(Σ1Σ2) = Σ_i √λ_i(M); both square roots
    come from ``eigh`` with rounding-negative eigenvalues clipped to 0, so the result is finite even when a
    covariance is singular (which is warned about).
    """
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w1, v1 = scipy.linalg.eigh(sigma1)  # scipy's LAPACK driver: several times faster than numpy's here
    for name, w in zip(names, (w1, scipy.linalg.eigvalsh(sigma2)), strict=True):
        if _singular(w):
            warnings.warn(
                f"the {name} covariance ({len(w)}×{len(w)}) is singular or ill-conditioned (eigenvalues "
                f"{w.min():.3g} … {w.max():.3g}), e.g. from fewer samples than feature dimensions; the Fréchet "
                f"distance is finite but not comparable with published numbers",
                stacklevel=2,
            )
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    m = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(scipy.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance(a: Gaussian, b: Gaussian, names: tuple[str, str] = ("first", "second")) -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1Σ2), the squared 2-Wasserstein distance of two Gaussians (float64)."""
    if a.mu.shape != b.mu.shape or a.sigma.shape != b.sigma.shape:
        raise ValueError(f"statistics of different sizes: {a.mu.shape} and {b.mu.shape}")
    diff = a.mu.astype(np.float64) - b.mu.astype(np.float64)
    tr = np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt_product(a.sigma, b.sigma, names)
    return float(diff @ diff + tr)


class InceptionScore:
    """IS = mean over sequential splits s of exp(E_{x∈s} KL(p(y|x) ‖ p_s(y))), p_s(y) the split's mean of p(y|x);
    p(y|x) = softmax(logits). Splits hold ``split_size`` consecutive samples, the last one the remainder (ADM's
    rule: 5000, so 10 splits for 50K and one for fewer than 5000).

    Streams: per split it keeps only Σ_x Σ_y p log p and Σ_x p, since E_x KL = E_x Σ_y p log p − Σ_y p_s log p_s.
    """

    def __init__(self, split_size: int = 5000):
        self.split_size = split_size
        self.scores: list[float] = []
        self._start_split()

    def _start_split(self) -> None:
        self.n, self.plogp, self.p_sum = 0, 0.0, 0.0

    def _split_score(self) -> float:
        p_mean = self.p_sum / self.n
        return float(np.exp(self.plogp / self.n - torch.xlogy(p_mean, p_mean).sum().item()))

    def update(self, logits: torch.Tensor) -> None:
        """Add samples' logits [B, K], in order."""
        p = torch.softmax(logits.double(), dim=1)
        while len(p):
            part, p = p[: self.split_size - self.n], p[self.split_size - self.n :]
            self.n += len(part)
            self.plogp += torch.xlogy(part, part).sum().item()  # 0·log 0 = 0
            self.p_sum = self.p_sum + part.sum(0)
            if self.n == self.split_size:
                self.scores.append(self._split_score())
                self._start_split()

    def score(self) -> float:
        return float(np.mean(self.scores + ([self._split_score()] if self.n else [])))


def kth_neighbour_radii(x: torch.Tensor, k: int = 3, block: int = 10000, device=None) -> torch.Tensor:
    """r_i = distance from x_i to its k-th nearest neighbour in x [N, D], x_i itself excluded: the (k+1)-th smallest
    ‖x_i − x_j‖ over all j, j = i included (as ADM's evaluator, so duplicates count as neighbours at distance 0).

    Computed over [block, block] distance tiles, keeping the k+1 smallest per row, so memory is O(block²).
    """
    radii = []
    for rows in x.split(block):
        rows = rows.to(device)
        nearest = rows.new_empty(len(rows), 0)
        for cols in x.split(block):
            d = torch.cat([nearest, torch.cdist(rows, cols.to(device))], dim=1)
            nearest = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values
        radii.append(nearest[:, k].cpu())
    return torch.cat(radii)


def manifold_coverage(
    points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int = 10000, device=None
) -> float:
    """Fraction of points inside the union of balls B(c_j, r_j): mean_i 1[∃ j: ‖p_i − c_j‖ ≤ r_j]."""
    inside = []
    for rows in points.split(block):
        rows = rows.to(device)
        hit = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        for cols, r in zip(centres.split(block), radii.split(block), strict=True):
            hit |= (torch.cdist(rows, cols.to(device)) <= r.to(device)).any(dim=1)
        inside.append(hit.cpu())
    return torch.cat(inside).double().mean().item()


def precision_recall(
    ref: torch.Tensor, sample: torch.Tensor, k: int = 3, block: int = 10000, device=None
) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds: precision = the fraction of sample features inside the
    reference manifold (balls of radius = distance to the k-th reference neighbour), recall = the fraction of
    reference features inside the sample manifold."""
    precision = manifold_coverage(sample, ref, kth_neighbour_radii(ref, k, block, device), block, device)
    recall = manifold_coverage(ref, sample, kth_neighbour_radii(sample, k, block, device), block, device)
    return precision, recall
