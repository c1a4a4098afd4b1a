"""extract_features.py on a tiny random image folder with a small randomly initialised AutoencoderKL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from data.images import center_crop_arr
from tests.processes import launcher
from tests.stand_ins import save_tiny_vae

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder_and_vae(tmp_path_factory):
    root = tmp_path_factory.mktemp("fx")
    rng = np.random.default_rng(0)
    for i in range(5):
        d = root / "images" / ("cat" if i < 3 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
    save_tiny_vae(root / "vae")
    return root


def extract(root, out, nproc=1, expect=0):
    paths = ["--data-path", str(root / "images"), "--out", str(out), "--vae", str(root / "vae")]
    args = [*paths, *"--image-size 16 --shard-size 2 --batch-size 2 --num-workers 0".split()]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "extract_features.py")
    res = subprocess.run([*launcher(nproc), script, *args], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == expect, res.stderr[-3000:]
    return res


def test_shards_manifest_and_flips(folder_and_vae, tmp_path):
    root = folder_and_vae
    extract(root, tmp_path / "lat", nproc=2)
    manifest = json.loads((tmp_path / "lat/manifest.json").read_text())
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    assert [s["labels"] for s in manifest["shards"]] == [[0, 0], [0, 1], [1]]
    assert manifest["classes"] == ["cat", "dog"] and manifest["latent_shape"] == [4, 8, 8]
    assert manifest["scale_factor"] == 0.18215 and manifest["image_size"] == 16
    moments = np.concatenate([np.load(tmp_path / "lat" / s["file"]) for s in manifest["shards"]])
    assert moments.shape == (5, 2, 2, 4, 8, 8) and moments.dtype == np.float16
    # The manifest's per-channel statistics of z = μ + σ·ε over both flips: mean E[μ], variance E[μ² + σ²] − E[μ]².
    m = moments.astype(np.float64)
    mu, sigma = m[:, :, 0].transpose(2, 0, 1, 3, 4), m[:, :, 1].transpose(2, 0, 1, 3, 4)  # [C, 5, 2, 8, 8]
    mean = mu.reshape(4, -1).mean(1)
    std = np.sqrt((mu**2 + sigma**2).reshape(4, -1).mean(1) - mean**2)
    np.testing.assert_allclose(manifest["normalization"]["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(manifest["normalization"]["std"], std, rtol=1e-9)

    vae = AutoencoderKL.from_pretrained(root / "vae").eval()
    image = Image.open(root / "images/dog/4.png").convert("RGB")
    x = torch.from_numpy(center_crop_arr(image, 16)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        plain, flipped = vae.encode(x).latent_dist, vae.encode(x.flip(-1)).latent_dist
    for view, posterior in ((0, plain), (1, flipped)):
        np.testing.assert_allclose(moments[4, view, 0], posterior.mean[0].numpy(), atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(moments[4, view, 1], posterior.std[0].numpy(), atol=2e-3, rtol=2e-3)
    assert not np.allclose(moments[4, 0, 0], moments[4, 1, 0])


def test_rerun_skips_finished_shards(folder_and_vae, tmp_path):
    out = tmp_path / "lat"
    extract(folder_and_vae, out)
    (out / "shard-00001.npy").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npy")}
    extract(folder_and_vae, out)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npy")}
    assert set(after) == {"shard-00000.npy", "shard-00001.npy", "shard-00002.npy"}
    assert all(after[k] == before[k] for k in before)


def test_latents_train_then_sample_decodes_with_the_recorded_vae(folder_and_vae, tmp_path):
    extract(folder_and_vae, tmp_path / "lat")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    flags = "--model DiT-T/4 --global-batch-size 2 --max-steps 1 --num-workers 0".split()
    args = [*flags, "--data-path", str(tmp_path / "lat"), "--results-dir", str(tmp_path / "run")]
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = tmp_path / "run/checkpoints/0000001.pt"
    assert torch.load(ckpt, weights_only=True)["data"]["decoder"] == str(folder_and_vae / "vae")
    args = ["--ckpt", str(ckpt), "--num-samples", "3", "--steps", "2", "--out", str(tmp_path / "s.npz")]
    res = subprocess.run([sys.executable, str(ROOT / "sample_ddp.py"), *args], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    images = np.load(tmp_path / "s.npz")["arr_0"]
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8  # decoded: 4×8×8 latents -> 16×16 RGB


def test_missing_folder_is_one_line_and_exit_2(folder_and_vae, tmp_path):
    res = extract(folder_and_vae / "nope", tmp_path / "lat", expect=2)
    missing = folder_and_vae / "nope" / "images"
    expected = f"extract_features.py: error: --data-path {missing} does not exist or is not a directory"
    assert res.stderr.strip().splitlines() == [expected]
