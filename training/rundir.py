"""The run directory: a default name that tells runs apart, and the rule that no start destroys another run.

A fresh start (no ``--resume``) into a directory that already holds a run is refused, and so is continuing a
run with another seed, model, data or loss: those are other runs, and would mix their logs and checkpoints
(docs/training.md says why this codebase refuses rather than resumes by default).
"""

import json
from pathlib import Path

from diffusion.loss import LOSS_FLAGS
from training.checkpoint import DIFFUSION_FLAGS, list_checkpoints

# What makes two runs different runs: the model, the data, the seed and every loss option. Anything else, such as
# --max-steps, --grad-accum or the launcher, may change when a run continues. The loss options are the flags of
# the LossConfig's fields (diffusion/loss.py) and of the diffusion, less the three that every name spells out.
LOSS_OPTIONS = tuple(k for k in (*LOSS_FLAGS, *DIFFUSION_FLAGS) if k not in ("weighting", "prediction", "seed"))
DISTINCT = (
    "model",
    "data_path",
    "data_norm",
    "image_size",
    "vae",
    "seed",
    "global_batch_size",
    "class_dropout",
    "prediction",
    "weighting",
    *LOSS_OPTIONS,
)


def default_run_dir(args, defaults: dict) -> Path:
    """``results/<model>-<prediction>-<weighting>[-<option> ...]-s<seed>``: every loss option that differs from its
    default is named (a switch by its name, a choice by its value, a number after its name), e.g.
    results/DiT-T-4-x0-min_snr-snr_gamma2-laplace-s1."""
    parts = [args.model.replace("/", "-"), args.prediction, args.weighting]
    for key in LOSS_OPTIONS:
        value = getattr(args, key)
        if _plain(value) != _plain(defaults[key]):
            parts.append(key if value is True else value if isinstance(value, str) else f"{key}{_text(value)}")
    return Path("results") / "-".join([*parts, f"s{args.seed}"])


def check_run_dir(run_dir: Path, args) -> None:
    """Raise ValueError (one line) if this start would overwrite or mix with the run already in ``run_dir``."""
    config = run_dir / "config.json"
    used = [p.name for p in (config, run_dir / "metrics.csv") if p.exists()] + [
        "checkpoints" for _ in list_checkpoints(run_dir / "checkpoints")[:1]
    ]
    if not used:
        return
    if not args.resume:
        raise ValueError(
            f"{run_dir} already holds a run ({', '.join(used)}); continue it with --resume auto, or "
            "start a new run with another --results-dir"
        )
    if not config.exists():
        return
    try:
        saved = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{config} is unreadable ({err}); move the run away or repair the file") from None
    for key in DISTINCT:
        if key in saved and _plain(saved[key]) != _plain(getattr(args, key)):
            raise ValueError(
                f"{run_dir} holds a run with {key} = {saved[key]!r}, and this one has "
                f"{getattr(args, key)!r}: that is another run; give it another --results-dir"
            )


def _plain(value):
    """The value as config.json stores it (tuples become lists)."""
    return json.loads(json.dumps(value))


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
