"""Noise-band attribution at sampling time: switch_at_sigma, and sample_ddp.py --low-ckpt end to end."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion import create_diffusion, switch_at_sigma

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
COSINE = create_diffusion(noise_schedule="cosine", prediction="x0", weighting="const", learn_sigma=False)


def test_switch_routes_each_level_to_its_model(oracle):
    high, low = oracle(COSINE.alphas_cumprod, "x0", [1.0], 0.5), oracle(COSINE.alphas_cumprod, "x0", [-1.0], 0.5)
    model = switch_at_sigma(high, low, COSINE, 1.0)
    x = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    # σ_t = 1/√SNR_t = 1 where cos² = sin², at τ = 0.5·(1 + s) − s = 0.496, i.e. between t = 495 and 496.
    assert COSINE.sigmas[495] <= 1 < COSINE.sigmas[496]
    for t in (0, 300, 495):
        tt = torch.full((4,), t)
        assert torch.equal(model(x, tt), low(x, tt))
    for t in (496, 800, 999):
        tt = torch.full((4,), t)
        assert torch.equal(model(x, tt), high(x, tt))
    mixed = torch.tensor([100, 900, 495, 496])
    parts = [low(x[:1], mixed[:1]), high(x[1:2], mixed[1:2]), low(x[2:3], mixed[2:3]), high(x[3:], mixed[3:])]
    expected = torch.cat(parts)
    torch.testing.assert_close(model(x, mixed), expected)
    with pytest.raises(ValueError, match="must be > 0"):
        switch_at_sigma(high, low, COSINE, 0.0)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for name, prediction in (("a", "x0"), ("b", "x0"), ("eps", "eps")):
        flags = "--model DiT-T/4 --max-steps 1 --global-batch-size 4 --num-workers 0 --lr 1e-2".split()
        args = [*flags, "--prediction", prediction, "--seed", str(len(out)), "--results-dir", str(root / name)]
        res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=ENV)
        assert res.returncode == 0, res.stderr[-2000:]
        path = root / name / "checkpoints/0000001.pt"
        state = torch.load(path, weights_only=True)  # noise on the weights: adaLN-Zero starts at exactly zero
        g = torch.Generator().manual_seed(len(out))
        state["ema"] = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in state["ema"].items()}
        torch.save(state, path)
        out[name] = path
    return out


def sample(ckpt: Path, out: Path, *extra: str, expect: int = 0) -> subprocess.CompletedProcess:
    flags = "--num-samples 4 --per-proc-batch-size 4 --sampler heun --steps 4 --cfg-scale 1".split()
    cmd = [sys.executable, str(ROOT / "sample_ddp.py"), "--ckpt", str(ckpt), "--out", str(out), *flags, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == expect, res.stderr[-2000:]
    return res


def test_low_ckpt_below_every_level_or_above_every_level_is_one_model_bytewise(ckpts, tmp_path):
    sample(ckpts["a"], tmp_path / "a.npz")
    sample(ckpts["b"], tmp_path / "b.npz")
    sample(ckpts["a"], tmp_path / "a_low_b_never.npz", "--low-ckpt", str(ckpts["b"]), "--switch-sigma", "1e-9")
    sample(ckpts["a"], tmp_path / "a_low_b_always.npz", "--low-ckpt", str(ckpts["b"]), "--switch-sigma", "1e9")
    sample(ckpts["a"], tmp_path / "a_low_b_half.npz", "--low-ckpt", str(ckpts["b"]), "--switch-sigma", "1")
    read = {k: (tmp_path / f"{k}.npz").read_bytes() for k in ("a", "b", "a_low_b_never", "a_low_b_always")}
    assert read["a_low_b_never"] == read["a"] and read["a_low_b_always"] == read["b"] and read["a"] != read["b"]
    half = (tmp_path / "a_low_b_half.npz").read_bytes()
    assert half not in (read["a"], read["b"])


def test_a_low_ckpt_with_another_target_is_refused_in_one_line_and_exit_2(ckpts, tmp_path):
    res = sample(ckpts["a"], tmp_path / "x.npz", "--low-ckpt", str(ckpts["eps"]), expect=2)
    last = res.stderr.strip().splitlines()[-1]
    assert last.endswith(
        "differs from --ckpt in prediction; the two models must share the target, schedule and data space"
    )
    assert not (tmp_path / "x.npz").exists()
