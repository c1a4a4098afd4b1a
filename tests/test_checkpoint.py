"""The checkpoint format (training/checkpoint.py): write -> read round trips, the model rebuilt from ``arch`` alone,
the old layout (version 1) read to the same model, sampling result and resumed run, and newer versions refused."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data import Scale, TrainingData
from data.normalization import Normalization
from data.transform import read_transform, transform_record
from diffusion import LossConfig, create_diffusion, edm_timesteps, sample_heun
from diffusion.uncertainty import LogVariance
from models import create_model
from sampling import load_for_sampling
from training.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    model_arch,
    read,
    read_for_resume,
    restore,
    save_atomic,
)
from training.config import parse_args

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--model",
    "DiT-T/4",
    "--global-batch-size",
    "4",
    "--lr",
    "1e-2",
    "--ema-decay",
    "0.5",
    "--learned-uncertainty",
]
TRANSFORMS = {"scale": Scale(0.5), "channel": Normalization((0.1, -0.2, 0.3, 0.0), (0.5, 2.0, 1.0, 0.25))}


def parts(args, data: TrainingData, seed: int) -> dict:
    """Model, EMA, optimizer, scaler and learned uncertainty as train.py builds them, after one optimizer step and
    with noise on the weights (adaLN-Zero's zero init would otherwise make every output zero)."""
    torch.manual_seed(seed)
    arch = model_arch(vars(args), data.shape, data.num_classes)
    model, ema = (create_model(arch["name"], **arch["kwargs"]) for _ in range(2))
    with torch.no_grad():
        for p in (*model.parameters(), *ema.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    logvar = LogVariance(seed=seed)
    opt = torch.optim.AdamW([*model.parameters(), *logvar.parameters()], lr=args.lr)
    sum((p * p).sum() for p in opt.param_groups[0]["params"]).backward()  # a state that depends on the seed
    opt.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return {"model": model, "ema": ema, "opt": opt, "scaler": scaler, "logvar": logvar}


def checkpoint(args, data, p: dict, step: int = 7) -> dict:
    return make_checkpoint(args, data, p["model"], p["ema"], p["opt"], p["scaler"], step, p["logvar"])


def old_layout(args, data: TrainingData, p: dict, step: int, scale_factor: float) -> dict:
    """What train.py wrote before the format had a name (commit f480ae5, train.py:208-219). ``scale_factor`` is the
    data's latent scale, recorded even when normalisation replaced it."""
    norm = data.transform if isinstance(data.transform, Normalization) else None
    return {
        "model": p["model"].state_dict(),
        "ema": p["ema"].state_dict(),
        "opt": p["opt"].state_dict(),
        "scaler": p["scaler"].state_dict(),
        "step": step,
        "args": vars(args),
        "data": {
            "seed": args.seed,
            "position": step * args.global_batch_size,
            "shape": list(data.shape),
            "num_classes": data.num_classes,
            "decoder": data.decoder,
            "scale_factor": scale_factor,
            "description": data.description,
            "normalization": norm.record() if norm else None,
        },
        "uncertainty": p["logvar"].state_dict(),
    }


def same(a, b) -> bool:
    """Nested dicts, lists and tensors equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


@pytest.fixture
def run():
    args = parse_args(FLAGS)
    data = TrainingData(None, "latent", (4, 8, 8), 3, "test latents", transform=TRANSFORMS["channel"], decoder="vae")
    return args, data


def test_write_read_restore_write_gives_the_same_checkpoint(run, tmp_path):
    args, data = run
    written = checkpoint(args, data, parts(args, data, seed=0))
    save_atomic(written, tmp_path / "c.pt")
    fresh = parts(args, data, seed=1)
    assert not same(fresh["model"].state_dict(), written["model"])  # another seed: restore has work to do
    step = restore(read(load_checkpoint(tmp_path / "c.pt"), "c.pt"), *fresh.values())
    assert step == 7
    assert same(checkpoint(args, data, fresh), written)
    assert written["format"] == {"name": "minsnr-dit", "version": 3}
    kwargs = {"input_size": 8, "in_channels": 4, "num_classes": 3, "learn_sigma": False, "class_dropout_prob": 0.1}
    assert written["arch"] == {"name": "DiT-T/4", "kwargs": {**kwargs, "qk_norm": False}}


def test_the_loss_record_is_the_loss_config_with_every_field(run):
    """``loss`` is ``LossConfig.to_dict()``: a key per field, so a new field or table parameter is recorded without
    an edit here, and the record rebuilds the config the run trained with."""
    args, data = run
    args.weighting, args.timestep_sampling, args.seed = "soft_min_snr", "logit_normal", 5
    record = checkpoint(args, data, parts(args, data, seed=0))["loss"]
    assert list(record) == [f.name for f in dataclasses.fields(LossConfig)]
    assert LossConfig.from_dict(record) == LossConfig.from_args(args)
    assert record["weighting_params"] == {"snr_gamma": 5.0} and record["density_params"] == {"logit_normal": (0.0, 1.0)}
    assert record["learned_uncertainty"] is True and record["uncertainty_seed"] == 5
    with pytest.raises(ValueError, match=r"unknown loss settings \['gamma'\]; valid: prediction, weighting"):
        LossConfig.from_dict({**record, "gamma": 5.0})


# What version 2 recorded as ``loss``: these flags, by hand (training/checkpoint.py as of commit 0b01235).
V2_LOSS_FLAGS = (
    "weighting snr_gamma sigma_data sigmoid_bias timestep_sampling logit_normal laplace timestep_objective "
    "learned_uncertainty"
).split()


def test_versions_2_and_1_read_to_the_loss_record_of_version_3(run):
    args, data = run
    args.weighting, args.snr_gamma, args.seed = "min_snr", 3.0, 2
    written = checkpoint(args, data, parts(args, data, seed=0))
    flags = vars(args)
    v2 = {**written, "format": {"name": "minsnr-dit", "version": 2}, "loss": {k: flags[k] for k in V2_LOSS_FLAGS}}
    assert same(read(v2, "v2.pt"), written)
    v1 = old_layout(args, data, parts(args, data, seed=0), 7, 0.5)
    assert read(v1, "v1.pt")["loss"] == written["loss"]
    # A version-1 file from before the timestep densities and learned uncertainty: those take their defaults.
    v1["args"] = {k: v for k, v in flags.items() if k not in V2_LOSS_FLAGS[4:]}
    expected = LossConfig(prediction="x0", weighting="min_snr", weighting_params={"snr_gamma": 3.0}, uncertainty_seed=2)
    assert LossConfig.from_dict(read(v1, "v1.pt")["loss"]) == expected


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_data_transforms_invert_and_round_trip_through_their_record(name):
    transform = TRANSFORMS[name]
    z = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(transform.invert(transform.apply(z)), z)
    assert read_transform(transform_record(transform), 4, "test") == transform
    with pytest.raises(ValueError, match="test: unknown data transform 'log'; known: scale, channel"):
        read_transform({"name": "log"}, 4, "test")
    with pytest.raises(ValueError, match="bad data scale"):
        read_transform({"name": "scale", "factor": -1.0}, 4, "test")


def test_sampling_rebuilds_the_model_from_arch_alone(run, tmp_path):
    """Neither the flags nor the data record's shape are read: the model comes from the registry and ``arch``."""
    args, data = run
    p = parts(args, data, seed=0)
    ckpt = checkpoint(args, data, p)
    del ckpt["args"]
    ckpt["data"] = {"decoder": "vae"}
    save_atomic(ckpt, tmp_path / "c.pt")
    model, spec = load_for_sampling(str(tmp_path / "c.pt"), weights="raw")
    assert same(model.state_dict(), p["model"].state_dict())
    assert (spec.model, spec.null_class, spec.transform, spec.decoder) == ("DiT-T/4", 3, data.transform, "vae")


@pytest.mark.parametrize("name,scale_factor", [("scale", 0.5), ("channel", 0.18215)])
def test_the_old_layout_gives_the_same_model_and_samples(run, tmp_path, name, scale_factor):
    args, data = run
    data.transform = TRANSFORMS[name]
    p = parts(args, data, seed=0)
    save_atomic(old_layout(args, data, p, 7, scale_factor), tmp_path / "old.pt")
    save_atomic(checkpoint(args, data, p), tmp_path / "new.pt")
    assert "format" not in load_checkpoint(tmp_path / "old.pt")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2])
    images = []
    for weights, part in (("ema", "ema"), ("raw", "model")):
        (old, old_spec), (new, new_spec) = (
            load_for_sampling(str(tmp_path / f), weights=weights) for f in ("old.pt", "new.pt")
        )
        assert same(old.state_dict(), p[part].state_dict()) and same(new.state_dict(), p[part].state_dict())
        assert old_spec == new_spec
        d = create_diffusion(noise_schedule=new_spec.noise_schedule, prediction=new_spec.prediction, learn_sigma=False)
        images += [
            spec.to_data(sample_heun(net, x.clone(), edm_timesteps(d, 3), d, {"y": y}))
            for net, spec in ((old, old_spec), (new, new_spec))
        ]
    assert torch.equal(images[0], images[1]) and torch.equal(images[2], images[3])
    x0 = sample_heun(new, x.clone(), edm_timesteps(d, 3), d, {"y": y})  # the raw weights, inverted by hand
    if name == "scale":
        by_hand = x0 / 0.5
    else:
        mean, std = (torch.tensor(v)[:, None, None] for v in (data.transform.mean, data.transform.std))
        by_hand = x0 * std + mean
    torch.testing.assert_close(images[3], by_hand, rtol=1e-6, atol=1e-6)
    assert images[3].std() > 0.1


def test_resume_from_the_old_layout_is_bitwise(latents, tmp_path):
    """A run's step-2 checkpoint rewritten in the old layout resumes to the uninterrupted run's step 4, bit for bit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def train(*extra: str) -> None:
        flags = "--max-steps 4 --ckpt-every 2 --keep-checkpoints 0 --num-workers 0".split()
        cmd = [sys.executable, str(ROOT / "train.py"), *FLAGS, "--data-path", str(latents), *flags, *extra]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]

    train("--results-dir", str(tmp_path / "a"))
    new = load_checkpoint(tmp_path / "a/checkpoints/0000002.pt")
    old = {k: new[k] for k in ("model", "ema", "opt", "scaler", "step", "args", "uncertainty")}
    old["data"] = {**new["data"], "scale_factor": 0.5, "normalization": None}  # the latents' manifest scale
    save_atomic(old, tmp_path / "old.pt")
    train("--results-dir", str(tmp_path / "b"), "--resume", str(tmp_path / "old.pt"))
    a, b = (load_checkpoint(tmp_path / f"{r}/checkpoints/0000004.pt") for r in "ab")
    assert all(same(a[k], b[k]) for k in ("model", "ema", "opt", "uncertainty", "step"))
    assert "resumed from" in (tmp_path / "b/log.txt").read_text()


def test_a_newer_format_version_is_refused_in_one_line(run, tmp_path):
    args, data = run
    p = parts(args, data, seed=0)
    ckpt = checkpoint(args, data, p)
    ckpt["format"]["version"] = 4
    save_atomic(ckpt, tmp_path / "future.pt")
    expected = "has checkpoint format {'name': 'minsnr-dit', 'version': 4}; this code reads minsnr-dit versions 1 to 3"
    for load in (
        lambda: load_for_sampling(str(tmp_path / "future.pt")),
        lambda: read_for_resume(tmp_path / "future.pt", args, data, p["model"]),
    ):
        with pytest.raises(ValueError, match="newer version needs newer code") as err:
            load()
        assert expected in str(err.value) and "\n" not in str(err.value)
