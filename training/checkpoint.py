"""Checkpoints: the format train.py writes, one reader for every version, resume, and the files themselves
(atomic writes, keep-last-K, newest-first discovery, loads that never run pickled code).

Format "minsnr-dit" version 3 (docs/training.md#checkpoint-format), a dict of plain data and tensors:

    format          {"name": "minsnr-dit", "version": 3}
    arch            {"name": registry name, "kwargs": constructor arguments}: the model, rebuilt from this alone
    diffusion       noise_schedule, diffusion_steps, prediction, learn_sigma: what sampling needs to read the model
    loss            ``LossConfig.to_dict()`` (diffusion/loss.py): target, weighting and density with their
                    parameters, objective, learned uncertainty and its seed
    data_transform  {"name": "scale" | "channel", ...}: data/transform.py, inverted by sampling
    data            shape, num_classes, decoder, description; seed and position of the data order
    model, ema      state dicts (raw and EMA weights); ema_decay
    opt, scaler     optimizer and grad-scaler state; step
    uncertainty     the learned u(λ), only with --learned-uncertainty
    args            the run's flags, for the record (nothing reads them)

Version 2 is version 3 with ``loss`` as flat flags (weighting, every weighting and density parameter, ...).
Version 1 is what train.py wrote before the format had a name: model, ema, opt, scaler, step, ``args`` (the flags)
and ``data`` (with the transform as ``scale_factor`` and ``normalization``). :func:`read` converts both on load.
Everything is tensors, numbers, strings and plain containers, so ``torch.load(weights_only=True)`` reads it; a
file that would need arbitrary code is refused with a clear message.
"""

import re
from pathlib import Path

import torch

from data.transform import transform_record
from diffusion.loss import LossConfig
from models import check_weights, load_weights
from training.atomic import WriteError, atomic_write

FORMAT_NAME, FORMAT_VERSION = "minsnr-dit", 3
DIFFUSION_FLAGS = ("noise_schedule", "diffusion_steps", "prediction", "learn_sigma")
_NAME = re.compile(r"^(\d{7})\.pt$")


def model_arch(flags: dict, shape, num_classes: int) -> dict:
    """The model train.py's ``flags`` build for data of ``shape`` [C, H, W]: its registry name and the constructor
    arguments that fix its weights and forward (``grad_checkpoint`` only trades memory for time, so it is not one)."""
    channels, size, _ = shape
    kwargs = {
        "input_size": size,
        "in_channels": channels,
        "num_classes": num_classes,
        "learn_sigma": flags["learn_sigma"],
        "class_dropout_prob": flags["class_dropout"],
        "qk_norm": flags.get("qk_norm", False),  # version 1 files may predate the flag
    }
    return {"name": flags["model"], "kwargs": kwargs}


def _settings(flags: dict, shape, num_classes: int) -> dict:
    """What a checkpoint says of the run, from its flags: shared by the writer and the reader of version 1."""
    return {
        "arch": model_arch(flags, shape, num_classes),
        "diffusion": {k: flags[k] for k in DIFFUSION_FLAGS},
        "loss": LossConfig.from_flags(flags).to_dict(),  # version 1 files may predate a flag: its default
        "ema_decay": flags["ema_decay"],
    }


def make_checkpoint(args, data, model, ema, opt, scaler, step: int, logvar=None) -> dict:
    """The checkpoint of a run with flags ``args`` on ``data`` (a ``TrainingData``) after ``step`` steps."""
    flags = vars(args)
    ckpt = {
        "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION},
        **_settings(flags, data.shape, data.num_classes),
        "data_transform": transform_record(data.transform),
        "data": {"seed": args.seed, "position": step * args.global_batch_size, **data.record()},
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "opt": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "args": flags,
    }
    if logvar is not None:
        ckpt["uncertainty"] = logvar.state_dict()
    return ckpt


def is_training_checkpoint(state) -> bool:
    """Whether a loaded file is one train.py wrote (any version), rather than a release or a foreign file."""
    return isinstance(state, dict) and ("format" in state or {"args", "ema"} <= state.keys())


def read(state, path) -> dict:
    """A loaded checkpoint of train.py in today's layout: version 3 as it is, versions 1 and 2 converted. One
    ValueError line for a foreign file or another format, a newer version included."""
    if not is_training_checkpoint(state):
        keys = sorted(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a training checkpoint of this codebase (it holds {keys})")
    if "format" not in state:
        return _from_v1(state, path)
    if state["format"] == {"name": FORMAT_NAME, "version": 2}:
        return _from_v2(state)
    if state["format"] != {"name": FORMAT_NAME, "version": FORMAT_VERSION}:
        raise ValueError(
            f"{path} has checkpoint format {state['format']}; this code reads {FORMAT_NAME} versions 1 to "
            f"{FORMAT_VERSION} (a newer version needs newer code)"
        )
    return state


def _from_v2(state: dict) -> dict:
    """Version 2 -> 3: ``loss`` held the flags; the config is made from them, the target and the data seed."""
    flags = {**state["diffusion"], **state["loss"], "seed": state["data"]["seed"]}
    return {
        **state,
        "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION},
        "loss": LossConfig.from_flags(flags).to_dict(),
    }


def _from_v1(state: dict, path) -> dict:
    """Version 1 -> 3: the settings from the flags, the transform from the data record."""
    flags, data = state["args"], state.get("data", {})
    if "shape" not in data:
        raise ValueError(f"{path} predates data records (shape, decoder); retrain or resave it")
    norm = data.get("normalization")
    transform = {"name": "scale", "factor": data["scale_factor"]} if norm is None else {"name": "channel", **norm}
    return {
        **state,
        "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION},
        **_settings(flags, data["shape"], data["num_classes"]),
        "data_transform": transform,
        "data": {k: v for k, v in data.items() if k not in ("scale_factor", "normalization")},
    }


def read_for_resume(path: str | Path, args, data, model) -> dict:
    """The checkpoint at ``path`` (any version), once it is known to continue this run: the same model name, the
    same data normalisation, a learned uncertainty iff ``--learned-uncertainty``, and weights that fit ``model``.
    Each mismatch is one ValueError line, raised before anything is loaded."""
    ckpt = read(load_checkpoint(path), path)
    if not {"opt", "scaler", "step"} <= ckpt.keys():
        raise ValueError(f"--resume {path} holds no optimizer state to resume from (it holds {sorted(ckpt)[:8]})")
    saved = ckpt["arch"]["name"]
    if saved != args.model:
        raise ValueError(f"--resume {path} is a checkpoint of {saved}, but --model is {args.model}")
    saved_norm, norm = _normalization(ckpt["data_transform"]), _normalization(transform_record(data.transform))
    if saved_norm != norm:
        raise ValueError(
            f"--resume {path} was trained with data normalisation {saved_norm}, but this run has "
            f"{norm} (--data-norm {args.data_norm})"
        )
    if ("uncertainty" in ckpt) != args.learned_uncertainty:
        raise ValueError(
            f"--resume {path} was trained {'with' if 'uncertainty' in ckpt else 'without'} "
            "--learned-uncertainty; resume it the same way"
        )
    check_weights(model, ckpt["model"], args.model)
    return ckpt


def _normalization(transform: dict) -> dict | None:
    """The per-channel statistics of a transform record, None for a plain scale (what --data-norm decides)."""
    return None if transform["name"] == "scale" else {"mean": transform["mean"], "std": transform["std"]}


def restore(ckpt: dict, model, ema, opt, scaler, logvar=None) -> int:
    """Resume from ``ckpt`` (see :func:`read_for_resume`): load the model, EMA, optimizer, scaler and learned
    uncertainty in place, and return the step to continue from."""
    name = ckpt["arch"]["name"]
    load_weights(model, ckpt["model"], name)
    load_weights(ema, ckpt["ema"], name)
    opt.load_state_dict(ckpt["opt"])
    scaler.load_state_dict(ckpt["scaler"])
    if logvar is not None:
        logvar.load_state_dict(ckpt["uncertainty"])
    return ckpt["step"]


def save_atomic(obj: dict, path: str | Path) -> None:
    """``torch.save`` through ``atomic_write``: a crash at any moment leaves the old checkpoint or the new one.
    torch reports a full disk as a ``RuntimeError`` of its zip writer; that becomes a ``WriteError`` too."""
    path = Path(path)
    with atomic_write(path) as tmp, tmp.open("wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:
            raise WriteError(path, f"torch.save failed: {str(err).splitlines()[0]}") from err


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"{step:07d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints ``NNNNNNN.pt`` in ``directory``, oldest first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def prune_checkpoints(directory: str | Path, keep: int, keep_every: int | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps everything) and, with ``keep_every``, the
    milestones whose step divides by it."""
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            if not keep_every or int(old.stem) % keep_every:
                old.unlink()


def load_weights_only(source, path: str | Path, map_location="cpu"):
    """``torch.load(source, weights_only=True)`` where ``source`` is ``path`` or its bytes. Every failure becomes
    one ValueError line naming ``path``: code-carrying pickles are refused as such, and anything else (random
    bytes, a cut file, another format) is called unreadable. torch's own advice to load unsafely is never quoted."""
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as err:  # junk fails in many ways: UnpicklingError, RuntimeError, EOFError, KeyError, ...
        text = str(err).split("WeightsUnpickler error:")[-1]
        lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
        first = lines[0] if lines else type(err).__name__
        if first.startswith("Unsupported global"):  # the pickle names Python code to run
            raise ValueError(
                f"refusing to load {path}: it needs arbitrary pickled code, which is never executed here ({first})"
            ) from None
        raise ValueError(
            f"{path} is unreadable or truncated, or not a PyTorch file ({type(err).__name__}: {first})"
        ) from None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint through :func:`load_weights_only`; a missing file is one clear line too."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    return load_weights_only(path, path, map_location)
