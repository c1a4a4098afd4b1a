"""evaluate_fid.py and the evaluation package: the metrics against closed forms, numpy and scipy; the readers;
the Inception features against a by-hand forward; end to end with a randomly initialised Inception; bad input."""

import datetime
import hashlib
import http.client
import http.server
import json
import math
import os
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from evaluate_fid import main
from evaluation import EXTRACTORS, Extractor, Gaussian, InceptionScore, RunningGaussian, evaluate, frechet_distance
from evaluation.features import InceptionV3, download, find_inception_weights, save_random_inception
from evaluation.metrics import kth_neighbour_radii, precision_recall, trace_sqrt_product
from evaluation.sources import open_source, save_statistics

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = r"FID \d+\.\d{4} sFID \d+\.\d{4} IS \d+\.\d{2} precision [01]\.\d{4} recall [01]\.\d{4} \(10 samples vs ref\)"


def random_spd(rng, d: int, n: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, n or 2 * d))
    return a @ a.T / a.shape[1]


def adm_frechet_distance(mu1, s1, mu2, s2) -> float:
    """ADM's formula with scipy's general matrix square root."""
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def adm_inception_score(logits: np.ndarray, split: int) -> float:
    """ADM's evaluator: for each run of `split` rows, exp(mean_x Σ_y p (log p − log mean_x p)); then the mean."""
    preds, scores = softmax(logits), []
    for i in range(0, len(preds), split):
        part = preds[i : i + split]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))


def brute_precision_recall(ref: np.ndarray, sample: np.ndarray, k: int) -> tuple[float, float]:
    """Full distance matrices; radius = (k+1)-th smallest distance in the own set, self included."""

    def dist(a, b):
        return np.linalg.norm(a[:, None] - b[None], axis=-1)

    r_ref, r_sample = np.sort(dist(ref, ref), 1)[:, k], np.sort(dist(sample, sample), 1)[:, k]
    d = dist(sample, ref)  # [S, R]
    return float((d <= r_ref[None]).any(1).mean()), float((d.T <= r_sample[None]).any(1).mean())


# --- Fréchet distance and streaming statistics ----------------------------------------------------------------------


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=50), rng.normal(size=50)
    v1, v2 = rng.uniform(0.1, 3, 50), rng.uniform(0.1, 3, 50)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = frechet_distance(Gaussian(mu1, np.diag(v1)), Gaussian(mu2, np.diag(v2)))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_a_gaussian_with_itself_is_zero_at_inception_size():
    rng = np.random.default_rng(1)
    g = Gaussian(rng.normal(size=2048), random_spd(rng, 2048, 4096))
    assert abs(frechet_distance(g, g)) < 1e-6 * np.trace(g.sigma)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trace_sqrt_product_agrees_with_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    s1, s2 = random_spd(rng, 64), random_spd(rng, 64)
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.trace(scipy.linalg.sqrtm(s1 @ s2).real), rel=1e-9)
    mu1, mu2 = rng.normal(size=64), rng.normal(size=64)
    fd = frechet_distance(Gaussian(mu1, s1), Gaussian(mu2, s2))
    assert fd == pytest.approx(adm_frechet_distance(mu1, s1, mu2, s2), rel=1e-9)


def test_singular_covariance_warns_and_stays_finite():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 32))  # fewer samples than dimensions: rank 9
    g = Gaussian(x.mean(0), np.cov(x, rowvar=False))
    other = Gaussian(rng.normal(size=32), random_spd(rng, 32))
    with pytest.warns(UserWarning, match="singular"):
        fd = frechet_distance(g, other)
    assert np.isfinite(fd) and fd > 0
    with pytest.warns(UserWarning, match="singular"):
        assert abs(frechet_distance(g, g)) < 1e-6 * np.trace(g.sigma)


def test_streaming_statistics_match_numpy_across_uneven_batches():
    rng = np.random.default_rng(3)
    x = 1000 + rng.normal(size=(103, 7)) @ rng.normal(size=(7, 7))  # a large mean tests the merging's stability
    running = RunningGaussian(7)
    for chunk in np.array_split(x, [1, 2, 50, 51, 90]):
        running.update(torch.from_numpy(chunk))
    g = running.gaussian()
    assert g.count == 103
    np.testing.assert_allclose(g.mu, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(g.sigma, np.cov(x, rowvar=False, ddof=1), rtol=1e-9, atol=1e-12)


# --- Inception Score -------------------------------------------------------------------------------------------------


def test_inception_score_of_uniform_predictions_is_one():
    score = InceptionScore()
    score.update(torch.zeros(12, 1008))
    assert score.score() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 10, 1008])
def test_inception_score_of_confident_balanced_predictions_is_the_class_count(k):
    score = InceptionScore()
    score.update(1000.0 * nn.functional.one_hot(torch.arange(4 * k) % k, k))  # one split: 4032 < 5000
    assert score.score() == pytest.approx(k, rel=1e-12)


def test_inception_score_splits_are_sequential():
    """Split 1: five samples of class 0 (IS 1); split 2: five distinct classes (IS 5); mean 3, fed in batches of 3."""
    logits = 1000.0 * nn.functional.one_hot(torch.tensor([0, 0, 0, 0, 0, 0, 1, 2, 3, 4]), 5)
    score = InceptionScore(split_size=5)
    for batch in logits.split(3):
        score.update(batch)
    assert score.score() == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize("n,split", [(23, 10), (7, 5000), (20, 5)])
def test_inception_score_matches_adms_formula(n, split):
    logits = np.random.default_rng(n).normal(scale=3, size=(n, 6))
    score = InceptionScore(split_size=split)
    for batch in torch.from_numpy(logits).split(4):
        score.update(batch)
    assert score.score() == pytest.approx(adm_inception_score(logits, split), rel=1e-12)


# --- precision and recall --------------------------------------------------------------------------------------------


def test_precision_recall_of_identical_and_of_far_apart_sets():
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(40, 5)))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)
    assert precision_recall(x, x + 1000) == (0.0, 0.0)


@pytest.mark.parametrize(
    "ref,sample,k,expected",
    [
        # k=1: reference balls [-1,1], [0,2], [1,19] hold 0.5 only; sample balls [-4.5,0.5], [-2,3], [12,30],
        # [21,39] hold the references 0 and 1, not 10
        ([0, 1, 10], [-2, 0.5, 21, 30], 1, (1 / 4, 2 / 3)),
        # k=3: reference radii 3, 2, 2, 3 give [-3, 6], which holds -3 (boundary) and 5; sample radii 10.5, 9.5, 8,
        # 9.5, 10 cover [-14.5, 17], all of the references
        ([0, 1, 2, 3], [-4, -3, 5, 6.5, 7], 3, (2 / 5, 1.0)),
    ],
)
def test_precision_recall_by_hand(ref, sample, k, expected):
    ref, sample = torch.tensor(ref, dtype=torch.float64)[:, None], torch.tensor(sample, dtype=torch.float64)[:, None]
    assert precision_recall(ref, sample, k=k) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("block", [3, 7, 10000])
def test_blocked_precision_recall_matches_full_distance_matrices(block):
    rng = np.random.default_rng(5)
    ref, sample = rng.normal(size=(37, 6)), rng.normal(0.3, 1.2, size=(29, 6))
    got = precision_recall(torch.from_numpy(ref), torch.from_numpy(sample), k=3, block=block)
    assert got == brute_precision_recall(ref, sample, 3)
    radii = kth_neighbour_radii(torch.from_numpy(ref), 3, block)
    d = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    np.testing.assert_allclose(radii.numpy(), np.sort(d, 1)[:, 3], rtol=1e-12)


# --- readers ---------------------------------------------------------------------------------------------------------


def test_npz_images_stream_in_batches_whatever_the_storage(tmp_path):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (11, 5, 4, 3), dtype=np.uint8)
    stored = [(np.savez, images), (np.savez_compressed, images), (np.savez, np.asfortranarray(images))]
    for i, (save, arr) in enumerate(stored):
        save(tmp_path / f"{i}.npz", arr_0=arr)
        batches = list(open_source(tmp_path / f"{i}.npz").images.batches(4))
        assert [len(b) for b in batches] == [4, 4, 3]
        np.testing.assert_array_equal(np.concatenate(batches), images)


def test_folder_images_are_read_sorted_from_any_depth_grey_or_rgb(tmp_path):
    rng = np.random.default_rng(7)
    grey, rgb = rng.integers(0, 256, (3, 6, 5), dtype=np.uint8), rng.integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    for i, a in enumerate(grey):
        (tmp_path / "g" / f"d{i}").mkdir(parents=True)
        Image.fromarray(a).save(tmp_path / "g" / f"d{i}" / "x.png")
    for i, a in enumerate(rgb):
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.fromarray(a).save(tmp_path / "c" / f"{i}.PNG")
    g = open_source(tmp_path / "g").images
    assert (g.count, g.shape) == (3, (6, 5, 1))
    np.testing.assert_array_equal(np.concatenate(list(g.batches(2))), grey[..., None])
    c = open_source(tmp_path / "c").images
    np.testing.assert_array_equal(np.concatenate(list(c.batches(5))), rgb)


# --- a toy extractor through the whole pipeline (no Inception) ------------------------------------------------------


class Toy(nn.Module):
    """pool = (mean of each channel, std of all pixels); logits: 1000·one-hot of the class written in pixel (0, 0)."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.double()
        pool = torch.cat([x.mean((1, 2)), x.flatten(1).std(1, keepdim=True)], 1)
        return {"pool": pool, "logits": 1000.0 * nn.functional.one_hot(images[:, 0, 0, 0].long() % 3, 3)}


def toy_features(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64)
    return np.concatenate([x.mean((1, 2)), x.reshape(len(x), -1).std(1, ddof=1)[:, None]], 1)


@pytest.fixture
def toy(monkeypatch, tmp_path):
    weights = tmp_path / "toy.bin"
    weights.write_bytes(b"toy")
    monkeypatch.setitem(EXTRACTORS, "toy", Extractor(lambda w: weights, lambda p: Toy(), {"pool": 4, "logits": 3}))
    rng = np.random.default_rng(8)
    ref, sample = rng.integers(0, 256, (9, 6, 6, 3), dtype=np.uint8), rng.integers(0, 200, (12, 6, 6, 3), np.uint8)
    sample[:, 0, 0, 0] = np.arange(12)  # classes 0, 1, 2, 0, ...: balanced
    np.savez(tmp_path / "ref.npz", arr_0=ref)
    np.savez(tmp_path / "sample.npz", arr_0=sample)
    return tmp_path, ref, sample


def test_a_registered_extractor_reports_its_own_metric_names_and_right_values(toy):
    d, ref, sample = toy
    result = evaluate(d / "ref.npz", d / "sample.npz", extractor="toy", batch_size=5, device="cpu")
    m = result["metrics"]
    assert list(m) == ["fd_toy", "is_toy", "precision_toy", "recall_toy"]
    fr, fs = toy_features(ref), toy_features(sample)
    expected = adm_frechet_distance(fs.mean(0), np.cov(fs, rowvar=False), fr.mean(0), np.cov(fr, rowvar=False))
    assert m["fd_toy"] == pytest.approx(expected, rel=1e-9)
    assert m["is_toy"] == pytest.approx(3.0, rel=1e-12)
    assert (m["precision_toy"], m["recall_toy"]) == brute_precision_recall(
        fr.astype(np.float32), fs.astype(np.float32), 3
    )
    assert result["sample"]["count"] == 12
    assert result["reference"] == {"path": str(d / "ref.npz"), "count": 9, "statistics": "computed"}


def test_stored_reference_statistics_are_used_for_the_frechet_distance(toy):
    d, _, sample = toy
    rng = np.random.default_rng(9)
    stored = Gaussian(rng.normal(size=4), random_spd(rng, 4), 1234)
    save_statistics(d / "stats.npz", "toy", {"pool": stored}, None, 1234, "sha")
    result = evaluate(d / "stats.npz", d / "sample.npz", "fid", extractor="toy", device="cpu")
    fs = toy_features(sample)
    expected = adm_frechet_distance(fs.mean(0), np.cov(fs, rowvar=False), stored.mu, stored.sigma)
    assert result["metrics"] == {"fd_toy": pytest.approx(expected, rel=1e-9)}
    assert result["reference"] == {"path": str(d / "stats.npz"), "count": 1234, "statistics": "stored"}


# --- Inception -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A randomly initialised inception-v3-compat state dict (the real weights cannot be downloaded here)."""
    return save_random_inception(tmp_path_factory.mktemp("inception") / "weights.pth")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """REF: a folder of 8 RGB 48×48 PNGs in two subfolders; SAMPLE: an .npz of 10 RGB 32×32 images with labels."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(10)
    for i in range(8):
        (d / "ref" / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(d / "ref" / f"class{i % 2}/{i}.png")
    np.savez(d / "sample.npz", arr_0=rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), arr_1=np.arange(10))
    return d


def test_inception_features_are_pool_3_mixed_6d_branch1x1_and_the_unbiased_logits(weights):
    """By hand, through torch-fidelity's own modules: TF's mixed_6/conv is Mixed_6d.branch1x1 (post-ReLU); sFID takes
    its first 7 channels of the NHWC tensor, flattened."""
    images = torch.randint(0, 256, (3, 20, 24, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    model = InceptionV3(weights)
    ours = model(images)
    net = FeatureExtractorInceptionV3("x", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights))
    nchw = images.permute(0, 3, 1, 2)
    pool, logits = net(nchw)
    x = (interpolate_bilinear_2d_like_tensorflow1x(nchw.float(), size=(299, 299), align_corners=False) - 128) / 128
    layers = "Conv2d_1a_3x3 Conv2d_2a_3x3 Conv2d_2b_3x3 MaxPool_1 Conv2d_3b_1x1 Conv2d_4a_3x3 MaxPool_2"
    layers += " Mixed_5b Mixed_5c Mixed_5d Mixed_6a Mixed_6b Mixed_6c"
    for name in layers.split():
        x = getattr(net, name)(x)
    mixed_6_conv = net.Mixed_6d.branch1x1(x).detach().numpy().transpose(0, 2, 3, 1)  # NHWC [3, 17, 17, 192]
    assert mixed_6_conv.shape == (3, 17, 17, 192) and (mixed_6_conv >= 0).all()
    spatial = mixed_6_conv[..., :7].reshape(3, -1)
    assert ours["spatial"].shape == (3, 2023) and ours["spatial"].abs().sum() > 0
    torch.testing.assert_close(ours["spatial"], torch.from_numpy(spatial), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["pool"], pool)
    torch.testing.assert_close(ours["logits"], pool @ net.fc.weight.T)
    torch.testing.assert_close(logits, pool @ net.fc.weight.T)
    grey = images[..., :1]
    grey_out, repeated_out = model(grey), model(grey.expand(-1, -1, -1, 3))
    for kind in ("pool", "spatial", "logits"):
        torch.testing.assert_close(grey_out[kind], repeated_out[kind])


def test_command_line_end_to_end(weights, inputs, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, str(ROOT / "evaluate_fid.py"), str(inputs / "ref"), str(inputs / "sample.npz")]
    cmd += ["--weights", str(weights), "--device", "cpu", "--batch-size", "4", "--json", str(tmp_path / "out.json")]
    cmd += ["--save-ref-stats", str(tmp_path / "ref_stats.npz")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(SUMMARY, lines[0]), out.stdout
    assert "Traceback" not in out.stderr and "singular" in out.stderr  # 8 and 10 images in 2048 dimensions
    report = json.loads((tmp_path / "out.json").read_text())
    m = report["metrics"]
    assert list(m) == ["fid", "sfid", "is", "precision", "recall"]
    assert all(math.isfinite(v) for v in m.values()) and m["fid"] > 0 and m["sfid"] > 0 and m["is"] >= 1
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert report["sample"] == {"path": str(inputs / "sample.npz"), "count": 10}
    assert report["reference"] == {"path": str(inputs / "ref"), "count": 8, "statistics": "computed"}
    s = report["settings"]
    assert s["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (s["feature_extractor"], s["batch_size"], s["is_split_size"], s["pr_neighbours"]) == (
        "inception",
        4,
        5000,
        3,
    )
    assert {"torch", "torch_fidelity", "numpy"} <= set(s["versions"])

    # the saved statistics serve as REF without images and give the same numbers
    with np.load(tmp_path / "ref_stats.npz", allow_pickle=False) as f:
        assert f["mu"].shape == (2048,) and f["sigma_s"].shape == (2023, 2023) and f["features"].shape == (8, 2048)
        assert str(f["feature_extractor"]) == "inception" and int(f["count"]) == 8
    with pytest.warns(UserWarning, match="singular"):
        again = evaluate(
            tmp_path / "ref_stats.npz", inputs / "sample.npz", "fid,pr", weights=str(weights), device="cpu"
        )
    assert again["metrics"] == pytest.approx({k: m[k] for k in ("fid", "precision", "recall")}, rel=1e-6)
    assert again["reference"]["statistics"] == "stored"


def test_a_sample_against_itself_has_zero_distances_and_full_precision_recall(weights, inputs):
    with pytest.warns(UserWarning, match="singular"):
        result = evaluate(inputs / "sample.npz", inputs / "sample.npz", "fid,pr", weights=str(weights), device="cpu")
    m = result["metrics"]
    assert abs(m["fid"]) < 1e-6 and (m["precision"], m["recall"]) == (1.0, 1.0)


def test_weights_come_from_the_hub_cache(weights, monkeypatch, tmp_path):
    cached = tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert find_inception_weights(None) == cached
    assert find_inception_weights(str(weights)) == weights


def test_missing_weights_and_no_network_is_one_line_naming_the_file_and_url(inputs, tmp_path):
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "https_proxy", "all_proxy")}
    env |= {"PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9"}  # refused
    cmd = [sys.executable, str(ROOT / "evaluate_fid.py"), str(inputs / "ref"), str(inputs / "sample.npz")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "weights-inception-2015-12-05-6726825d.pth" in lines[0], out.stderr
    assert URL_INCEPTION_V3 in lines[0] and "--weights" in lines[0]
    assert not list(tmp_path.rglob("*"))  # nothing written under TORCH_HOME, not even a partial download


@pytest.mark.parametrize("server_then", ["stalls", "hangs up"])
def test_a_download_that_stalls_or_is_cut_off_fails_and_leaves_no_file(tmp_path, server_then):
    """A server sends the headers and 10 of 1000 bytes, then nothing, or closes the connection: the download gives
    up after its timeout (a timeout, not a short file) or on the short body, and writes nothing."""
    release = threading.Event()

    class Server(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            if server_then == "stalls":
                release.wait(60)  # held open until the test is done

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # A short timeout only where one must fire: under load, a hang-up could otherwise arrive after it.
    expected, timeout = (TimeoutError, 0.5) if server_then == "stalls" else (http.client.IncompleteRead, 30)
    try:
        with pytest.raises(expected):
            download(f"http://127.0.0.1:{server.server_port}/weights.pth", tmp_path / "hub" / "w.pth", timeout=timeout)
    finally:
        release.set()
        server.shutdown()
    assert not list(tmp_path.rglob("*"))


# --- bad input: one line, exit code 2 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.npz"
    np.savez(path, arr_0=np.random.default_rng(11).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    return path


def fails(capsys, *args) -> str:
    """Run main() in-process; it must exit with code 2 after exactly one stderr line. Returns that line."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate_fid.py: error: "), lines
    return lines[0]


def write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def truncated_npz(path: Path) -> Path:
    """A zip whose arr_0.npy header promises 6 images but holds 3."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((6, 4, 4, 3), np.uint8))
    with zipfile.ZipFile(path, "w") as z, z.open("arr_0.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(3 * 4 * 4 * 3))
    return path


def mixed_folder(path: Path) -> Path:
    path.mkdir()
    Image.new("RGB", (8, 8)).save(path / "a.png")
    Image.new("RGB", (8, 9)).save(path / "b.jpg")
    return path


def corrupt_png(path: Path) -> Path:
    path.mkdir()
    (path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return path


U8 = np.zeros((4, 8, 8, 3), np.uint8)


@pytest.mark.parametrize(
    "make_sample,message",
    [
        (lambda d: d / "none.npz", "none.npz does not exist"),
        (lambda d: write(d / "obj.npz", arr_0=np.array([{"a": 1}] * 3, dtype=object)), "Python objects"),
        (lambda d: write(d / "nokey.npz", images=U8), "holds neither images (arr_0) nor statistics (mu, sigma)"),
        (lambda d: write(d / "float.npz", arr_0=U8.astype(np.float32)), "is float32, expected uint8"),
        (lambda d: write(d / "nchw.npz", arr_0=U8.transpose(0, 3, 1, 2)), "[4, 3, 8, 8], which is NCHW"),
        (lambda d: write(d / "one.npz", arr_0=U8[:1]), "holds 1 image; a covariance needs at least 2"),
        (lambda d: write(d / "three.npz", arr_0=U8[:3]), "holds 3 images; precision/recall needs at least 4"),
        (lambda d: mixed_folder(d / "mixed"), "mixes image sizes: 8×8"),
        (lambda d: truncated_npz(d / "short.npz"), "fewer than its shape [6, 4, 4, 3] needs: it is truncated"),
        (
            lambda d: write(d / "stats.npz", feature_extractor=np.array("x")),
            "holds no images (arr_0); a sample must be",
        ),
        (lambda d: np.save(d / "x.npy", U8) or d / "x.npy", "x.npy is neither an .npz file nor a folder of images"),
        (lambda d: Path(d / "empty").mkdir() or d / "empty", "empty holds no PNG or JPEG images"),
        (lambda d: corrupt_png(d / "bad"), "x.png is not a readable image"),
    ],
)
def test_bad_samples(capsys, tmp_path, good, make_sample, message):
    assert message in fails(capsys, good, make_sample(tmp_path), "--device", "cpu")


def test_a_sample_still_being_written_or_truncated(capsys, tmp_path, good):
    (tmp_path / ".samples.npz.x1y2.tmp").write_bytes(b"PK\x03\x04")
    line = fails(capsys, good, tmp_path / "samples.npz")
    assert "samples.npz does not exist yet: .samples.npz.x1y2.tmp beside it is still being written" in line
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    assert "cut.npz is not a complete .npz: still being written, or truncated" in fails(
        capsys, good, tmp_path / "cut.npz"
    )


def test_bad_references(capsys, tmp_path, good):
    adm_like = write(tmp_path / "adm.npz", arr_0=U8, mu=np.zeros(1000), sigma=np.eye(1000))
    assert "pool statistics of shapes [1000] and [1000, 1000], but inception's pool features have 2048" in fails(
        capsys, adm_like, good
    )
    pickled = write(tmp_path / "pickled.npz", arr_0=U8, mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(1))
    assert "'mu' is an object array, which needs pickled code to load" in fails(capsys, pickled, good)
    save_statistics(tmp_path / "other.npz", "fashion", {"pool": Gaussian(np.zeros(3), np.eye(3))}, None, 5, "x")
    assert "holds fashion statistics, but the feature extractor is inception" in fails(
        capsys, tmp_path / "other.npz", good
    )
    save_statistics(
        tmp_path / "fid_only.npz", "inception", {"pool": Gaussian(np.zeros(2048), np.eye(2048))}, None, 5, "x"
    )
    line = fails(capsys, tmp_path / "fid_only.npz", good)
    assert "holds neither images nor the spatial statistics or pool features that fid, sfid, is, pr need" in line
    line = fails(capsys, tmp_path / "fid_only.npz", good, "--metrics", "fid", "--save-ref-stats", tmp_path / "s.npz")
    assert "--save-ref-stats saves statistics computed from REF's images, but REF" in line
    line = fails(capsys, good, good, "--save-ref-stats", tmp_path / "stats.txt")
    assert "stats.txt must be an .npz path in an existing directory" in line


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--metrics", "fid,kid"], "unknown metric 'kid'; valid: fid, sfid, is, pr"),
        (["--feature-extractor", "clip"], "unknown feature extractor 'clip'; valid: inception"),
        (["--weights", "/nonexistent.pth"], "--weights /nonexistent.pth does not exist"),
        (["--device", "cuda:7"], "--device cuda:7: there is no such CUDA device"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--json", "/nonexistent/out.json"], "--json /nonexistent/out.json: its directory does not exist"),
    ],
)
def test_bad_options(capsys, good, extra, message):
    assert message in fails(capsys, good, good, *extra)


def test_weights_that_need_pickled_code_are_refused(capsys, tmp_path, good):
    torch.save({"Conv2d_1a_3x3.conv.weight": datetime.date(2015, 12, 5)}, tmp_path / "evil.pth")
    line = fails(capsys, good, good, "--weights", tmp_path / "evil.pth", "--device", "cpu")
    assert "refusing to load" in line and "datetime.date" in line
    (tmp_path / "junk.pth").write_text("not a torch file")
    line = fails(capsys, good, good, "--weights", tmp_path / "junk.pth", "--device", "cpu")
    assert "junk.pth is unreadable or truncated" in line
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "small.pth")
    line = fails(capsys, good, good, "--weights", tmp_path / "small.pth", "--device", "cpu")
    assert "small.pth does not hold inception-v3-compat weights" in line
