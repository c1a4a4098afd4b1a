"""The committed Fashion-MNIST classifier: its checksum guard, its accuracy, and FD-fashion through evaluate_fid."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.fashion_mnist import load_arrays
from evaluation import evaluate
from evaluation.fashion import (
    WEIGHTS,
    WEIGHTS_SHA256,
    FashionClassifier,
    label_accuracy,
    load_fashion_classifier,
    sha256,
)

ROOT = Path(__file__).resolve().parents[1]


def test_committed_weights_match_their_checksum_and_stay_small():
    assert sha256(WEIGHTS) == WEIGHTS_SHA256
    assert WEIGHTS.stat().st_size < 5e6


def test_a_file_with_another_checksum_is_refused(tmp_path):
    changed = tmp_path / "fashion_classifier.pt"
    shutil.copy(WEIGHTS, changed)
    data = bytearray(changed.read_bytes())
    data[-100] ^= 0xFF
    changed.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        load_fashion_classifier(changed)
    assert isinstance(load_fashion_classifier(WEIGHTS), FashionClassifier)


def test_test_accuracy_is_at_least_90_percent():
    images, labels = load_arrays("test")
    model = load_fashion_classifier()
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(b)[..., None])["logits"] for b in np.array_split(images, 10)])
    accuracy = (logits.argmax(1).numpy() == labels).mean()
    recorded = json.loads(WEIGHTS.with_suffix(".json").read_text())["test_accuracy"]
    assert accuracy >= 0.90 and abs(accuracy - recorded) < 1e-9


def padded(images: np.ndarray) -> np.ndarray:
    out = np.zeros((len(images), 32, 32, 1), dtype=np.uint8)
    out[:, 2:30, 2:30, 0] = images
    return out


def test_label_accuracy_of_the_padded_test_set_is_the_recorded_accuracy():
    """The demo's score: on real test images (padded as samples are) it is the classifier's recorded accuracy, and
    with every label shifted by one class it falls to near zero."""
    images, labels = load_arrays("test")
    recorded = json.loads(WEIGHTS.with_suffix(".json").read_text())["test_accuracy"]
    assert abs(label_accuracy(padded(images), labels) - recorded) < 1e-9
    assert label_accuracy(padded(images[:1000]), (labels[:1000] + 1) % 10) < 0.1


def test_fd_fashion_ranks_real_images_above_noise(tmp_path):
    images, labels = load_arrays("train")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "real.npz", arr_0=padded(images[:500]), arr_1=labels[:500])
    np.savez(tmp_path / "noise.npz", arr_0=rng.integers(0, 256, (500, 32, 32, 1), dtype=np.uint8))
    real = evaluate("fashion-test", tmp_path / "real.npz", "fid,sfid", "fashion", device="cpu")["metrics"]
    noise = evaluate("fashion-test", tmp_path / "noise.npz", "fid,sfid", "fashion", device="cpu")["metrics"]
    assert set(real) == {"fd_fashion", "sfd_fashion"}
    assert 0 < real["fd_fashion"] < noise["fd_fashion"] / 10
    assert 0 < real["sfd_fashion"] < noise["sfd_fashion"] / 10


def test_spatial_features_are_the_second_stage_first_7_channels_in_hwc_order():
    """Computed here layer by layer from the network's own modules: stage 1, stage 2, then channels 0..6 of the
    [B, 64, 8, 8] map, flattened with the channel fastest (HWC, as sFID flattens TF's NHWC)."""
    model = load_fashion_classifier()
    images = torch.from_numpy(padded(load_arrays("test")[0][:3]))
    with torch.no_grad():
        feats = model(images)
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
        stage2 = model.body[1](model.body[0](x))
    assert feats["spatial"].shape == (3, 448)
    for h, w, c in ((0, 0, 0), (3, 5, 6), (7, 7, 2)):
        assert feats["spatial"][1, (h * 8 + w) * 7 + c] == pytest.approx(float(stage2[1, c, h, w]), rel=1e-6)


def test_cli_reports_fd_fashion_never_fid(tmp_path):
    images, _ = load_arrays("train")
    np.savez(tmp_path / "s.npz", arr_0=padded(images[:50]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    flags = "--feature-extractor fashion --device cpu --metrics fid,is".split()
    cmd = [sys.executable, str(ROOT / "evaluate_fid.py"), "fashion-test", str(tmp_path / "s.npz"), *flags]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fd_fashion" in res.stdout and "is_fashion" in res.stdout and "FID" not in res.stdout
    np.savez(tmp_path / "rgb.npz", arr_0=np.zeros((4, 32, 32, 3), dtype=np.uint8))
    res = subprocess.run([*cmd[:3], str(tmp_path / "rgb.npz"), *cmd[4:]], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "takes grey images" in res.stderr
