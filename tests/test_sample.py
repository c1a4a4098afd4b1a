"""sample_ddp.py: byte-identical output for 1 and 2 processes, resume, balanced labels, releases, bad input."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import DiT_models
from sampling import PerSampleNoise, class_labels, image_grid, load_for_sampling, quantize
from tests.processes import launcher
from tests.reference_forwards import random_official_vit_state_dict

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A DiT-T/4 checkpoint from 2 training steps on the embedded Fashion-MNIST (pixel space, 1×32×32, 10 classes),
    with noise added to the weights: adaLN-Zero's zero init would otherwise make every sample the same flat grey."""
    run_dir = tmp_path_factory.mktemp("run")
    flags = "--model DiT-T/4 --max-steps 2 --global-batch-size 8 --num-workers 0 --lr 1e-2".split()
    args = [*flags, "--results-dir", str(run_dir)]
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    path = run_dir / "checkpoints/0000002.pt"
    state = torch.load(path, weights_only=True)
    g = torch.Generator().manual_seed(0)
    for part in ("model", "ema"):
        state[part] = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in state[part].items()}
    torch.save(state, path)
    return path


def sample(args: list[str], nproc: int = 1, expect: int = 0) -> subprocess.CompletedProcess:
    cmd = [*launcher(nproc), str(ROOT / "sample_ddp.py"), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == expect, res.stderr[-3000:]
    return res


def quick(ckpt: Path, out: Path, *extra: str) -> list[str]:
    flags = "--num-samples 14 --per-proc-batch-size 4 --sampler ddpm --steps 3".split()
    return ["--ckpt", str(ckpt), "--out", str(out), *flags, *extra]


def test_one_and_two_processes_write_identical_files(ckpt, tmp_path):
    sample(quick(ckpt, tmp_path / "one.npz", "--png-dir", str(tmp_path / "png")))
    sample(quick(ckpt, tmp_path / "two.npz"), nproc=2)
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "one.npz", allow_pickle=False) as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (14, 32, 32, 1)
    assert labels.dtype == np.int64 and labels.tolist() == [i % 10 for i in range(14)]
    assert len(list((tmp_path / "png").glob("*.png"))) == 14
    assert (tmp_path / "one.png").exists()  # the grid
    assert images.std() > 0


def test_more_processes_than_samples(ckpt, tmp_path):
    """3 samples in one batch: rank 1 has nothing to do, waits, and the file is the one process's, byte for byte."""
    args = ["--num-samples", "3", "--per-proc-batch-size", "4", "--sampler", "ddpm", "--steps", "2"]
    sample(["--ckpt", str(ckpt), "--out", str(tmp_path / "one.npz"), *args])
    sample(["--ckpt", str(ckpt), "--out", str(tmp_path / "two.npz"), *args], nproc=2)
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "two.npz", allow_pickle=False) as f:
        assert f["arr_0"].shape == (3, 32, 32, 1)


def test_weights_choose_ema_or_raw(ckpt):
    state = torch.load(ckpt, weights_only=True)
    for weights, part in (("ema", "ema"), ("raw", "model")):
        model, spec = load_for_sampling(str(ckpt), weights=weights)
        assert spec.source == "ours" and spec.decoder is None and spec.num_classes == 10
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[part][k]), (weights, k)


def test_labels_are_balanced_and_interleaved():
    labels = class_labels(0, 50_000, 1000)
    assert torch.equal(torch.bincount(labels), torch.full((1000,), 50))
    assert labels[:3].tolist() == [0, 1, 2] and labels[1000:1003].tolist() == [0, 1, 2]


def test_noise_of_a_sample_does_not_depend_on_its_batch():
    like = torch.empty(3, 2, 4, 4)
    a = PerSampleNoise(seed=7, start=0, stop=3)
    b = PerSampleNoise(seed=7, start=2, stop=5)
    assert torch.equal(a(like)[2], b(like)[0])
    assert torch.equal(a(like)[2], b(like)[0])  # the second draws too
    assert torch.equal(
        PerSampleNoise(7, 2, 3)(like[:1])[0], torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(9))
    )


def test_quantize_is_dits_rule_and_gives_every_pixel_back():
    """DiT's sample_ddp.py: clamp(127.5·x + 128, 0, 255), truncated. At x = 0 it gives 128, where ADM's
    (x + 1)·127.5 gives 127."""
    x = torch.tensor([-1.5, -1.0, -0.001, 0.0, 0.999, 1.0]).reshape(1, 1, 1, 6)
    assert quantize(x).ravel().tolist() == [0, 0, 127, 128, 255, 255]
    pixels = torch.arange(256)
    assert quantize((pixels / 127.5 - 1).reshape(1, 1, 1, 256)).ravel().tolist() == pixels.tolist()


def test_rerun_after_a_kill_resumes_and_gives_the_same_file(ckpt, tmp_path):
    args = quick(ckpt, tmp_path / "s.npz")
    sample(args)
    reference = (tmp_path / "s.npz").read_bytes()
    shards = tmp_path / "s.npz.shards"
    # What a kill leaves: no final file, some shards, and a half-written temporary file.
    (tmp_path / "s.npz").unlink()
    (shards / "0000004.npz").unlink()
    (shards / ".0000004.npz.abc.tmp").write_bytes(b"PK\x03\x04 half")
    kept = {p.name: p.stat().st_mtime_ns for p in shards.glob("0*.npz")}
    sample(args)
    assert (tmp_path / "s.npz").read_bytes() == reference
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("0*.npz") if p.name in kept} == kept
    assert (shards / "0000004.npz").exists()


def test_other_batch_size_changes_few_values(ckpt, tmp_path):
    """Across batch sizes only kernel blocking differs; measured here: see docs/sampling.md."""
    sample(quick(ckpt, tmp_path / "b4.npz"))
    sample([*quick(ckpt, tmp_path / "b7.npz"), "--per-proc-batch-size", "7"])
    a, b = (np.load(tmp_path / f"{n}.npz")["arr_0"].astype(int) for n in ("b4", "b7"))
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01


def test_released_dit_state_dict_needs_model_and_samples(tmp_path):
    torch.manual_seed(0)
    release = DiT_models["DiT-T/4"](input_size=16, in_channels=4, num_classes=5).state_dict()
    torch.save(release, tmp_path / "dit.pt")
    res = sample(["--ckpt", str(tmp_path / "dit.pt"), "--out", str(tmp_path / "x.npz"), "--num-samples", "2"], expect=2)
    assert res.stderr.strip().splitlines() == [
        "sample_ddp.py: error: a checkpoint without our training record needs --model (e.g. --model DiT-XL/2)"
    ]
    model, spec = load_for_sampling(str(tmp_path / "dit.pt"), "DiT-T/4")
    assert (spec.prediction, spec.noise_schedule, spec.num_classes, spec.null_class) == ("eps", "linear", 5, 5)
    assert spec.model_kwargs["learn_sigma"] and spec.decoder == "stabilityai/sd-vae-ft-mse"
    for k, v in model.state_dict().items():
        assert torch.equal(v, release[k])
    flags = "--model DiT-T/4 --vae none --num-samples 5 --steps 2 --cfg-channels 3".split()
    sample(["--ckpt", str(tmp_path / "dit.pt"), *flags, "--out", str(tmp_path / "d.npz")])
    assert np.load(tmp_path / "d.npz")["arr_0"].shape == (5, 16, 16, 4)


def test_official_minsnr_release_is_converted(tmp_path):
    official = random_official_vit_state_dict(depth=6, dim=128, patch=4, in_ch=4, out_ch=4, grid=4, rows=11)
    torch.save(official, tmp_path / "ema_0.9999_t.pt")
    model, spec = load_for_sampling(str(tmp_path / "ema_0.9999_t.pt"))
    assert (spec.model, spec.prediction, spec.noise_schedule, spec.num_classes) == ("ViT-T/4", "x0", "cosine", 10)
    assert spec.source == "minsnr-release" and not spec.model_kwargs["learn_sigma"]
    flags = "--vae none --num-samples 3 --steps 2".split()
    sample(["--ckpt", str(tmp_path / "ema_0.9999_t.pt"), *flags, "--out", str(tmp_path / "v.npz")])
    assert np.load(tmp_path / "v.npz")["arr_1"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model", "ViT-T/4"], "is a checkpoint of DiT-T/4, but --model is ViT-T/4"),
        (["--cfg-channels", "2"], "--cfg-channels 2 is not within 1..1"),
        (["--vae", "/nonexistent-vae"], "cannot load the VAE '/nonexistent-vae'"),
        (["--guidance-interval", "t:0,1000"], "whole timesteps with 0 <= LO <= HI <= 999"),
        (["--guidance-interval", "s:0,1"], "takes LO,HI (σ) or t:LO,HI (timesteps)"),
        (["--guidance-interval", "t:0"], "takes LO,HI (σ) or t:LO,HI (timesteps)"),
        (["--rho", "0"], "--sigma-max and --rho must be > 0"),
        (["--steps", "1001"], "asks for 1001 steps but the diffusion has only T=1000"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(ckpt, tmp_path, extra, message):
    res = sample([*quick(ckpt, tmp_path / "s.npz"), *extra], expect=2)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not (tmp_path / "s.npz").exists()


def test_heun_takes_the_edm_discretisation_knobs(ckpt, tmp_path):
    """--sigma-max and --rho reach the sampler: the defaults reproduce the plain run, other values change it."""
    heun = ["--sampler", "heun", "--steps", "3"]
    sample([*quick(ckpt, tmp_path / "a.npz"), *heun])
    sample([*quick(ckpt, tmp_path / "b.npz"), *heun, "--sigma-max", "80", "--rho", "7"])
    sample([*quick(ckpt, tmp_path / "c.npz"), *heun, "--sigma-max", "10"])
    sample([*quick(ckpt, tmp_path / "d.npz"), *heun, "--rho", "3"])
    arrays = {k: np.load(tmp_path / f"{k}.npz")["arr_0"] for k in "abcd"}
    assert np.array_equal(arrays["a"], arrays["b"])
    assert not np.array_equal(arrays["a"], arrays["c"]) and not np.array_equal(arrays["a"], arrays["d"])


def test_bad_files_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04" + b"\0" * 20)
    for name, message in (
        ("missing.pt", "does not exist"),
        ("evil.pt", "needs arbitrary pickled code"),
        ("cut.pt", "unreadable or truncated"),
    ):
        res = sample(["--ckpt", str(tmp_path / name), "--out", str(tmp_path / "s.npz")], expect=2)
        assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
        assert "pwned" not in res.stdout


def test_changed_settings_do_not_mix_with_old_shards(ckpt, tmp_path):
    sample(quick(ckpt, tmp_path / "s.npz"))
    res = sample([*quick(ckpt, tmp_path / "s.npz"), "--seed", "1"], expect=2)
    assert "holds shards made with other settings" in res.stderr


def test_guidance_needs_a_null_class(tmp_path):
    run_dir = tmp_path / "run"
    flags = "--model DiT-T/4 --max-steps 1 --global-batch-size 4 --num-workers 0 --class-dropout 0".split()
    args = [*flags, "--results-dir", str(run_dir)]
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    res = sample(quick(run_dir / "checkpoints/0000001.pt", tmp_path / "s.npz"), expect=2)
    assert "needs an unconditional class" in res.stderr
    sample([*quick(run_dir / "checkpoints/0000001.pt", tmp_path / "s.npz"), "--cfg-scale", "1"])


@pytest.mark.parametrize("n, columns, channels", [(64, 8, 3), (10, 4, 3), (5, 8, 1), (1, 8, 1)])
def test_the_grid_is_torchvisions_make_grid(n, columns, channels):
    """The grid layout against torchvision's make_grid (which makes grey images RGB; its first channel is ours)."""
    from torchvision.utils import make_grid

    images = np.random.default_rng(n).integers(1, 256, (n, 6, 5, channels), dtype=np.uint8)
    expected = make_grid(torch.from_numpy(images).permute(0, 3, 1, 2), nrow=columns, padding=2).permute(1, 2, 0)
    np.testing.assert_array_equal(image_grid(images, columns), expected.numpy()[..., :channels])
