"""One training step in parts: the optimizer, the step's random draws, the step itself, the noise-band log.

train.py's loop calls these in order; bench/train_step.py times the same ``train_step``. Every random draw is a
function of (seed, step) and is made for the whole global batch, then sliced to this rank's rows and to
micro-batches, so the draws do not depend on the number of processes or on ``--grad-accum``.
"""

import contextlib
import hashlib
import math
from dataclasses import dataclass

import torch

from diffusion.bands import BAND_NAMES, band_of_snr
from training import dist, precision


def step_seed(seed: int, step: int, rank: int = -1) -> int:
    """The seed of every draw made at ``step``; rank -1 is shared by all ranks (used for whole-batch draws).
    Defined by a specification, so it never changes with the Python version: the first 8 bytes, little-endian,
    of SHA-256 of the ASCII text "seed:step:rank", with the top bit cleared."""
    digest = hashlib.sha256(f"{seed}:{step}:{rank}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_optimizer(args, params) -> torch.optim.Optimizer:
    """Fused AdamW at ``--lr``, ``--adam-betas``, ``--weight-decay`` (the learning rate is set every step)."""
    return torch.optim.AdamW(
        params, lr=args.lr, betas=tuple(args.adam_betas), weight_decay=args.weight_decay, fused=True
    )


def learning_rate(args, step: int) -> float:
    """Linear warm-up over ``--warmup-steps``, then constant."""
    return args.lr * min(1.0, (step + 1) / args.warmup_steps) if args.warmup_steps else args.lr


@dataclass
class Batch:
    """This rank's part of one step's global batch, with every random draw made."""

    x0: torch.Tensor  # [b, C, H, W] float32
    t: torch.Tensor  # [b] long
    noise: torch.Tensor  # [b, C, H, W]
    y: torch.Tensor  # [b] long
    drop: torch.Tensor | None  # [b] bool: labels training replaces by the null class (None: no label dropout)

    def micro(self, k: int, parts: int) -> tuple:
        """The k-th of ``parts`` equal micro-batches as the loss's (x_start, t, model_kwargs, noise)."""
        n = self.t.shape[0] // parts
        rows = slice(k * n, (k + 1) * n)
        drop = None if self.drop is None else self.drop[rows]
        return self.x0[rows], self.t[rows], {"y": self.y[rows], "drop": drop}, self.noise[rows]


def draw_batch(x, y, step: int, args, data, diffusion, rows: slice, device: torch.device) -> Batch:
    """The step's draws for the global batch of ``args.global_batch_size``, sliced to ``rows``: the data's own
    (flips, latent posterior samples), t and the noise from one generator seeded by (seed, step); the label
    dropout from the global RNG seeded by (seed, step, 0), the seed a single process has always used for it."""
    n = args.global_batch_size
    gen = torch.Generator(device).manual_seed(step_seed(args.seed, step))
    torch.manual_seed(step_seed(args.seed, step, 0))
    x0 = data.prepare(x, gen, rows, n)
    t = diffusion.sample_timesteps(n, device, gen)[rows]
    noise = torch.randn((n, *x0.shape[1:]), device=device, generator=gen)[rows]
    drop = (torch.rand(n, device=device) < args.class_dropout)[rows] if args.class_dropout > 0 else None
    return Batch(x0, t, noise, y, drop)


@dataclass
class StepParts:
    """What one optimizer step needs: ``net`` is ``model`` as called (DDP- and compile-wrapped), ``u_net`` the
    learned-uncertainty module as called (or None), ``diffusion.loss`` the loss (diffusion/loss.py)."""

    net: torch.nn.Module
    model: torch.nn.Module
    u_net: torch.nn.Module | None
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    diffusion: object
    precision: str = "fp32"
    grad_accum: int = 1
    grad_clip: float = 0.0


def train_step(p: StepParts, batch: Batch, lr: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One optimizer step on this rank's batch in ``p.grad_accum`` micro-batches (DDP syncs gradients on the last
    only). Returns the batch-mean loss, the gradient norm before clipping, and the per-sample terms of the whole
    batch (``x0_mse``, and ``u`` with learned uncertainty): the same quantities as without accumulation.
    Raises FloatingPointError([loss, grad norm]) before the update when either is not finite on any rank."""
    for group in p.opt.param_groups:
        group["lr"] = lr
    device = next(p.model.parameters()).device
    k_total, losses, terms_all = p.grad_accum, [], []
    for k in range(k_total):
        micro = batch.micro(k, k_total)
        with contextlib.ExitStack() as stack:
            if k < k_total - 1:  # gradients are all-reduced once, on the last micro-batch
                for module in (p.net, p.u_net):
                    if hasattr(module, "no_sync"):
                        stack.enter_context(module.no_sync())
            with precision.autocast(device, p.precision):
                terms = p.diffusion.loss(p.net, *micro, p.u_net)
            loss = terms["loss"].float().mean()
            p.scaler.scale(loss if k_total == 1 else loss / k_total).backward()
        losses.append(loss.detach())
        terms_all.append({key: terms[key].detach() for key in ("x0_mse", "u") if key in terms})
    loss = losses[0] if k_total == 1 else torch.stack(losses).mean()
    p.scaler.unscale_(p.opt)
    grad_norm = torch.nn.utils.clip_grad_norm_(p.model.parameters(), p.grad_clip or math.inf)
    check = dist.all_reduce_mean(torch.stack([loss, grad_norm if p.precision != "fp16" else loss]))
    if not torch.isfinite(check).all():
        raise FloatingPointError(check.tolist())  # train.py names the step
    p.scaler.step(p.opt)
    p.scaler.update()
    p.opt.zero_grad(set_to_none=True)
    terms = {key: torch.cat([t[key] for t in terms_all]) for key in terms_all[0]}
    return loss, grad_norm.detach(), terms


class BandLog:
    """Running means between two log lines: loss, gradient norm, and the x0 error (and learned u) per noise band
    (diffusion/bands.py). ``metrics()`` all-reduces over ranks and starts a new interval."""

    def __init__(self, diffusion, device: torch.device):
        self.band_of_t = torch.as_tensor(band_of_snr(diffusion.snr), device=device)  # [T] band index of each t
        self.sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss, grad norm, summed over steps
        self.bands = torch.zeros(3, len(BAND_NAMES), device=device, dtype=torch.float64)  # [x0-MSE, u, count]
        self.steps = 0

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, t: torch.Tensor, terms: dict) -> None:
        self.sums += torch.stack([loss, grad_norm]).double()
        self.steps += 1
        band = self.band_of_t[t]
        self.bands[0].index_add_(0, band, terms["x0_mse"].double())
        if "u" in terms:
            self.bands[1].index_add_(0, band, terms["u"].double())
        self.bands[2].index_add_(0, band, torch.ones_like(band, dtype=torch.float64))

    def metrics(self, with_u: bool) -> dict[str, float]:
        """Interval means over all ranks; a band no rank drew logs NaN (an empty cell), not a made-up zero."""
        k = len(BAND_NAMES)
        totals = dist.all_reduce_mean(torch.cat([self.sums / self.steps, self.bands.flatten()]))
        counts = totals[2 + 2 * k :].where(totals[2 + 2 * k :] > 0, math.nan)
        band_mse, band_u = totals[2 : 2 + k] / counts, totals[2 + k : 2 + 2 * k] / counts
        out = {
            "loss": totals[0],
            "grad_norm": totals[1],
            **{f"x0_mse_{n}": band_mse[i] for i, n in enumerate(BAND_NAMES)},
        }
        if with_u:  # the weighting u learned: the loss it left at each band
            out |= {f"u_{name}": band_u[i] for i, name in enumerate(BAND_NAMES)}
        self.sums.zero_()
        self.bands.zero_()
        self.steps = 0
        return {key: float(value) for key, value in out.items()}
