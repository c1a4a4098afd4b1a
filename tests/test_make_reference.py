"""make_reference.py: ADM's centre crop against crops known by construction, and a folder of mixed sizes, at any
depth, whose statistics equal those computed from the known crops directly."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.images import center_crop_arr
from evaluation import fashion
from evaluation.features import InceptionV3, save_random_inception
from make_reference import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def around(crop: np.ndarray, margin: int, portrait: bool, rng: np.random.Generator) -> np.ndarray:
    """A larger image whose ADM crop is ``crop`` [s, s(, C)]: every pixel doubled (a box filter halves it back
    exactly), with 2·margin columns (rows when ``portrait``) of noise on either side of the long axis."""
    tile = crop.swapaxes(0, 1) if portrait else crop
    big = np.kron(tile, np.ones((2, 2, *[1] * (crop.ndim - 2)), np.uint8))
    noise = rng.integers(0, 256, (big.shape[0], 2 * margin, *big.shape[2:]), dtype=np.uint8)
    out = np.concatenate([noise, big, noise[:, ::-1]], axis=1)
    return np.ascontiguousarray(out.swapaxes(0, 1) if portrait else out)


@pytest.mark.parametrize("margin,portrait", [(0, False), (3, False), (5, True)])
def test_center_crop_halves_with_a_box_filter_then_takes_the_middle(margin, portrait):
    rng = np.random.default_rng(margin)
    crop = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    image = around(crop, margin, portrait, rng)
    assert image.shape == ((24 + 4 * margin, 24) if portrait else (24, 24 + 4 * margin))
    np.testing.assert_array_equal(center_crop_arr(Image.fromarray(image), 12), crop)
    rgb = np.stack([crop, 255 - crop, crop // 2], axis=-1)
    np.testing.assert_array_equal(center_crop_arr(Image.fromarray(around(rgb, margin, portrait, rng)), 12), rgb)


def test_center_crop_resizes_the_short_side_with_bicubic():
    """Below 2·size no halving: a 23×37 image is resized to 12×19 (round(37·12/23)), then cropped rows 3..14."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (37, 23), dtype=np.uint8))
    resized = np.asarray(image.resize((12, 19), resample=Image.BICUBIC))
    np.testing.assert_array_equal(center_crop_arr(image, 12), resized[3:15])
    assert (center_crop_arr(Image.new("L", (9, 5), 77), 16) == 77).all()  # upsampled


def make(cmd: list, expect: int = 0) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == expect, res.stderr[-3000:]
    return res


def test_folder_of_mixed_sizes_with_and_without_class_folders(tmp_path):
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    names = ["0.png", "1.png", "2.png", "a/3.png", "a/4.png", "b/5.png", "b/deep/6.png"]  # in the order read
    for i, (name, crop) in enumerate(zip(names, crops, strict=True)):
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(around(crop, i, i % 2 == 1, rng) if i else crop).save(tmp_path / "images" / name)
    (tmp_path / "images/a/notes.txt").write_text("not an image\n")
    flags = "--image-size 28 --feature-extractor fashion --device cpu --batch-size 3 --features".split()
    cmd = ["make_reference.py", tmp_path / "images", tmp_path / "ref.npz", *flags]
    assert "fashion statistics of 7 images, centre-cropped to 28×28" in make(cmd).stdout

    with torch.no_grad():
        out = fashion.build(fashion.WEIGHTS).eval()(torch.from_numpy(crops[..., None]))
    ref = np.load(tmp_path / "ref.npz")
    assert str(ref["feature_extractor"]) == "fashion" and int(ref["count"]) == 7
    for kind, (mu, sigma) in {"pool": ("mu", "sigma"), "spatial": ("mu_s", "sigma_s")}.items():
        features = out[kind].numpy()
        np.testing.assert_allclose(ref[mu], features.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ref[sigma], np.cov(features, rowvar=False), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref["features"], out["pool"].numpy(), rtol=1e-5, atol=1e-6)

    np.savez(tmp_path / "crops.npz", arr_0=crops[..., None])  # the crops themselves, scored against the file
    flags = "--metrics fid,pr --feature-extractor fashion --device cpu".split()
    score = make(["evaluate_fid.py", tmp_path / "ref.npz", tmp_path / "crops.npz", *flags]).stdout
    assert "precision_fashion 1.0000 recall_fashion 1.0000" in score
    assert abs(float(score.split()[1])) < 1e-3, score


def test_inception_statistics_of_colour_images_of_two_sizes(tmp_path):
    """The Inception path (a random stand-in for the weights, which cannot be downloaded here) on RGB images."""
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    for i, crop in enumerate(crops):
        Image.fromarray(around(crop, 2, False, rng) if i else crop).save(tmp_path / f"{i}.png")
    weights = save_random_inception(tmp_path / "inception.pt")
    main([str(tmp_path), str(tmp_path / "ref.npz"), "--image-size", "16", "--weights", str(weights), "--device", "cpu"])
    with torch.no_grad():
        out = InceptionV3(weights).eval()(torch.from_numpy(crops))
    ref = np.load(tmp_path / "ref.npz")
    assert str(ref["feature_extractor"]) == "inception" and "features" not in ref
    np.testing.assert_allclose(ref["mu"], out["pool"].double().mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref["sigma_s"], np.cov(out["spatial"].double().numpy(), rowvar=False), atol=1e-5)
