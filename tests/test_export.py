"""tools/export_diffusers.py: a tiny DiT exported and loaded back through diffusers gives our outputs and our DDIM."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion import create_diffusion, respaced_timesteps, sample_ddim
from models.diffusers_export import scheduler_config, use_dit_frequencies
from sampling import load_for_sampling

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
diffusers = pytest.importorskip("diffusers")


def train(run_dir: Path, *flags: str) -> Path:
    """2 steps of train.py on the embedded default, then noise on every weight but the fixed sin-cos positions:
    adaLN-Zero starts at zero, which would hide a wrong mapping of most layers."""
    args = ["--max-steps", "2", "--global-batch-size", "4", "--num-workers", "0", "--results-dir", str(run_dir), *flags]
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    path = run_dir / "checkpoints/0000002.pt"
    state = torch.load(path, weights_only=True)
    g = torch.Generator().manual_seed(0)
    for part in ("model", "ema"):
        noisy = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in state[part].items()}
        state[part] = noisy | {k: v for k, v in state[part].items() if k == "pos_embed"}
    torch.save(state, path)
    return path


def export(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "tools/export_diffusers.py"), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert res.returncode == expect, res.stderr[-2000:]
    return res


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """DiT-T/4 with x0-prediction and learned σ, exported."""
    tmp = tmp_path_factory.mktemp("export")
    ckpt = train(tmp / "run", "--model", "DiT-T/4", "--prediction", "x0", "--learn-sigma")
    export(str(ckpt), str(tmp / "out"))
    return ckpt, tmp / "out"


def test_the_export_gives_our_outputs_with_dits_frequencies(exported):
    ckpt, out = exported
    ours, spec = load_for_sampling(str(ckpt))
    theirs = diffusers.DiTTransformer2DModel.from_pretrained(out, subfolder="transformer").eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 32, 32, generator=g)
    t = torch.tensor([0, 1, 250, 500, 999, 999])
    y = torch.tensor([0, 3, 9, 10, 10, 5])  # 10 is the null class
    with torch.no_grad():
        expected = ours(x, t, y)
        stock = theirs(x, timestep=t, class_labels=y).sample
        patched = use_dit_frequencies(theirs)(x, timestep=t, class_labels=y).sample
    assert expected.shape == patched.shape == (6, 2, 32, 32)
    torch.testing.assert_close(patched, expected, rtol=1e-4, atol=1e-5)
    assert (stock - expected).abs().max() > 1e-2  # the stock frequencies give another model


def test_dit_and_diffusers_timestep_features_differ_as_measured():
    """Closed form: DiT's 256-d features use f_i = 10⁴^(−i/128), diffusers' DiT 10⁴^(−i/127) (downscale_freq_shift
    = 1). Their cosine similarity is 0.489 at t = 999 and 0.816 at the median t."""
    from diffusers.models.embeddings import get_timestep_embedding

    from models.layers import timestep_embedding

    t = torch.arange(1000)
    a = timestep_embedding(t, 256).double()
    b = get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=1).double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert cos[999].item() == pytest.approx(0.4893, abs=1e-3)
    assert cos.median().item() == pytest.approx(0.816, abs=2e-3)
    same = get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0).double()
    torch.testing.assert_close(same, a, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "prediction,schedule,kind,betas",
    [
        ("x0", "cosine", "sample", "squaredcos_cap_v2"),
        ("eps", "linear", "epsilon", "linear"),
        ("v", "scaled_linear", "v_prediction", "scaled_linear"),
    ],
)
def test_the_scheduler_has_our_schedule_and_target(prediction, schedule, kind, betas):
    sched = diffusers.DDIMScheduler.from_config(scheduler_config(prediction, schedule, 1000))
    assert sched.config.prediction_type == kind and sched.config.beta_schedule == betas
    ours = create_diffusion(noise_schedule=schedule, prediction=prediction).alphas_cumprod
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), ours, rtol=2e-5, atol=1e-9)


def test_ddim_through_diffusers_matches_ours(exported):
    ckpt, out = exported
    ours, spec = load_for_sampling(str(ckpt))
    theirs = use_dit_frequencies(diffusers.DiTTransformer2DModel.from_pretrained(out, subfolder="transformer").eval())
    sched = diffusers.DDIMScheduler.from_pretrained(out, subfolder="scheduler")
    d = create_diffusion(noise_schedule=spec.noise_schedule, prediction=spec.prediction, learn_sigma=True)
    noise = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    expected = sample_ddim(ours, noise.clone(), respaced_timesteps(d, "ddim10"), d, {"y": y})
    sched.set_timesteps(10)
    x = noise.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            out = theirs(x, timestep=t.expand(len(x)), class_labels=y).sample[:, :1]  # drop the variance channels
            x = sched.step(out, t, x).prev_sample
    assert [int(t) for t in sched.timesteps] == list(range(900, -1, -100))
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)


def test_the_record_names_the_data_settings(exported):
    ckpt, out = exported
    record = json.loads((out / "export.json").read_text())
    assert record["model"] == "DiT-T/4" and record["prediction"] == "x0" and record["null_class"] == 10
    assert record["decoder"] is None and record["weights"] == "ema"


def test_bad_input_is_one_line_and_writes_nothing(exported, tmp_path):
    ckpt, out = exported
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = export(str(ckpt), str(out), expect=2)  # an existing export is never overwritten
    assert "exists and is not empty" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tmp_path / "junk.pt").write_bytes(os.urandom(1000))
    res = export(str(tmp_path / "junk.pt"), str(tmp_path / "o"), expect=2)
    assert "unreadable or truncated" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    vit = train(tmp_path / "vit", "--model", "ViT-T/4")
    res = export(str(vit), str(tmp_path / "o"), expect=2)
    assert "the paper's ViT has no diffusers counterpart" in res.stderr
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))
