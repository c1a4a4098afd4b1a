"""The census of bad inputs (docs/reliability.md): every row is one line on stderr, exit code 2, and the directory
it ran in byte for byte as before, the bad file itself included."""

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.images import FolderImages
from tests.stand_ins import save_tiny_vae

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TRAIN = ["--model", "DiT-T/4", "--global-batch-size", "4", "--num-workers", "0", "--max-steps", "1"]


def write_bad_checkpoints(d: Path) -> None:
    """One file per class of bad checkpoint."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "random.pt").write_bytes(os.urandom(4096))
    (d / "empty.pt").write_bytes(b"")
    whole = io.BytesIO()
    torch.save({"model": {"w": torch.ones(64, 64)}}, whole)
    (d / "cut.pt").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    torch.save({"state_dict": {"net.weight": torch.ones(2)}, "epoch": 3, "global_step": 9}, d / "foreign.pt")
    torch.save({"model": {"w": torch.ones(2)}, "hook": print}, d / "code.pt")  # pickles a Python callable


CHECKPOINTS = {
    "random.pt": "unreadable",
    "empty.pt": "unreadable",
    "cut.pt": "unreadable",
    "code.pt": "needs arbitrary pickled code",
    "missing.pt": "does not exist",
}
TOML = {
    "unknown key": ("lr = 1e-4\nlearning_rate = 1e-4\n", "unknown keys ['learning_rate']"),
    "a string for a number": ('lr = "fast"\n', "lr = 'fast' is not a number"),
    "a number for a list": ("adam_betas = 0.9\n", "adam_betas = 0.9 is not a list of numbers"),
    "an unknown choice": ('prediction = "score"\n', "unknown prediction 'score'; valid: eps, x0, v"),
    "γ ≤ 0": ("weighting = 'min_snr'\nsnr_gamma = -1.0\n", "snr_gamma must be > 0"),
    "lr < 0": ("lr = -1e-4\n", "--lr must be a finite number >= 0"),
    "not TOML": ("lr = = 1\n", "--config"),
}


def tree(d: Path) -> dict:
    return {p.relative_to(d): hashlib.sha256(p.read_bytes()).hexdigest() for p in d.rglob("*") if p.is_file()}


def refused(cmd: list[str], cwd: Path, message: str, env: dict = ENV) -> None:
    before = tree(cwd)
    res = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr[-2000:]
    assert lines[0].startswith(f"{Path(cmd[0]).name}: error: ")
    assert tree(cwd) == before  # nothing written, nothing overwritten


@pytest.mark.parametrize("name", [*CHECKPOINTS, "foreign.pt"])
def test_train_resume_from_a_bad_checkpoint(tmp_path, name):
    write_bad_checkpoints(tmp_path / "bad")
    message = CHECKPOINTS.get(name, "is not a training checkpoint of this codebase (it holds ['epoch'")
    cmd = [str(ROOT / "train.py"), *TRAIN, "--resume", f"bad/{name}", "--results-dir", "run"]
    refused(cmd, tmp_path, message)


def test_train_resume_auto_with_a_foreign_file_named_like_a_checkpoint(tmp_path):
    (tmp_path / "run/checkpoints").mkdir(parents=True)
    (tmp_path / "run/checkpoints/0000005.pt").write_bytes(os.urandom(1000))
    cmd = [str(ROOT / "train.py"), *TRAIN, "--resume", "auto", "--results-dir", "run"]
    refused(cmd, tmp_path, "run/checkpoints/0000005.pt is unreadable")


@pytest.mark.parametrize("case", TOML)
def test_train_bad_config(tmp_path, case):
    text, message = TOML[case]
    (tmp_path / "c.toml").write_text(text)
    refused([str(ROOT / "train.py"), *TRAIN, "--config", "c.toml", "--results-dir", "run"], tmp_path, message)


def test_train_batch_that_does_not_divide_by_the_world_size(tmp_path):
    cmd = [str(ROOT / "train.py"), *TRAIN, "--results-dir", "run"]
    refused(cmd, tmp_path, "--global-batch-size 4 does not divide by 3 processes", {**ENV, "WORLD_SIZE": "3"})


def test_train_eval_samples_that_one_process_fills_and_two_do_not(tmp_path):
    cmd = [
        str(ROOT / "train.py"),
        *TRAIN,
        "--eval-every",
        "1",
        "--eval-samples",
        "20",
        "--eval-batch-size",
        "20",
        "--results-dir",
        "run",
    ]
    refused(cmd, tmp_path, "--eval-batch-size 20 × 2 process(es) = 40", {**ENV, "WORLD_SIZE": "2"})


RUN_OPTIONS = {
    "--grad-accum that does not divide the batch": (["--grad-accum", "3"], "--grad-accum 3 does not divide"),
    "--keep-every < 1": (["--keep-every", "0"], "--keep-every must be >= 1, got 0"),
    "a conflicting accelerate setting": (["--precision", "fp32"], "accelerate asks for precision bf16"),
    "--eval-every with a reference that does not exist": (
        ["--eval-every", "1", "--eval-ref", "missing.npz"],
        "--eval-every needs a reference it can score against: missing.npz does not exist",
    ),
    "--eval-every on --data-path without --eval-ref": (
        ["--eval-every", "1", "--data-path", "latents"],
        "--eval-every on --data-path needs --eval-ref",
    ),
    "--eval-samples that do not fill the batches": (
        ["--eval-every", "1", "--eval-samples", "30", "--eval-batch-size", "20"],
        "--eval-samples 30 does not fill whole batches across ranks: it must be a multiple (>= 2) of "
        "--eval-batch-size 20 × 1 process(es) = 20",
    ),
}


@pytest.mark.parametrize("case", RUN_OPTIONS)
def test_train_bad_run_options(tmp_path, case):
    extra, message = RUN_OPTIONS[case]
    env = {**ENV, "ACCELERATE_MIXED_PRECISION": "bf16"} if "accelerate" in case else ENV
    refused([str(ROOT / "train.py"), *TRAIN, *extra, "--results-dir", "run"], tmp_path, message, env)


@pytest.mark.parametrize("second", [[], ["--seed", "1", "--resume", "auto"]], ids=["fresh", "another seed"])
def test_train_into_a_directory_that_holds_another_run(tmp_path, second):
    cmd = [str(ROOT / "train.py"), *TRAIN, "--results-dir", "run"]
    subprocess.run([sys.executable, *cmd], check=True, capture_output=True, env=ENV, cwd=tmp_path, timeout=300)
    refused([*cmd, *second], tmp_path, "run already holds a run" if not second else "holds a run with seed = 0")


@pytest.mark.parametrize("name", [*CHECKPOINTS, "foreign.pt"])
def test_sample_from_a_bad_checkpoint(tmp_path, name):
    write_bad_checkpoints(tmp_path / "bad")
    message = CHECKPOINTS.get(name, "a checkpoint without our training record needs --model")
    cmd = [str(ROOT / "sample_ddp.py"), "--ckpt", f"bad/{name}", "--num-samples", "4", "--out", "s.npz"]
    refused(cmd, tmp_path, message)


def save_images(d: Path, n: int = 4, mode: str = "L", start: int = 0) -> None:
    """n random 28×28 PNGs of one mode in d."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).convert(mode).save(d / f"{i}.png")


def test_train_fd_fashion_on_images_it_cannot_score(tmp_path):
    save_images(tmp_path / "images/a", mode="RGB")
    cmd = [
        str(ROOT / "train.py"),
        *TRAIN,
        "--data-path",
        "images",
        "--vae",
        "none",
        "--image-size",
        "16",
        "--eval-every",
        "1",
        "--eval-extractor",
        "fashion",
        "--eval-ref",
        "fashion-test",
        "--eval-samples",
        "4",
        "--eval-batch-size",
        "2",
        "--results-dir",
        "run",
    ]
    refused(
        cmd,
        tmp_path,
        "--eval-extractor fashion scores grey 28×28 or 32×32 images, and this run's samples are "
        "[3, 16, 16]; use inception",
    )


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives, the pixel data does not


BAD_IMAGES = {  # what to put among good images -> the message
    "random bytes": (lambda d: (d / "9.png").write_bytes(os.urandom(500)), "9.png is not a readable image"),
    "a non-image file named .png": (lambda d: (d / "9.png").write_text("notes\n"), "9.png is not a readable image"),
    "a truncated image": (lambda d: truncate(d / "2.png"), "2.png is not a readable image (image file is truncated"),
    "an RGBA image": (lambda d: save_images(d, 1, "RGBA", 9), "9.png has an alpha channel (mode RGBA)"),
    "a 16-bit image": (lambda d: Image.new("I;16", (28, 28)).save(d / "9.png"), "9.png has mode I;16, not 8-bit"),
}
BAD_NPZ = {  # arrays of the .npz -> the message
    "an object array (a pickle)": ({"arr_0": np.array([{"a": 1}] * 4, dtype=object)}, "holds Python objects"),
    "float images": ({"arr_0": np.zeros((4, 28, 28, 1), np.float32)}, "is float32, expected uint8"),
    "NCHW images": ({"arr_0": np.zeros((4, 1, 28, 28), np.uint8)}, "which is NCHW"),
    "zero images": ({"arr_0": np.zeros((0, 28, 28, 1), np.uint8)}, "holds 0 images"),
}
BAD_STATS = {  # a reference statistics file -> the message
    "NaN in the mean": ({"mu": np.full(128, np.nan), "sigma": np.eye(128)}, "pool statistics (mu, sigma) hold NaN"),
    "inf in a covariance": (
        {
            "mu": np.zeros(128),
            "sigma": np.eye(128),
            "mu_s": np.zeros(448),
            "sigma_s": np.diag(np.r_[np.inf, np.ones(447)]),
        },
        "spatial statistics (mu_s, sigma_s)",
    ),
}
EVAL = [str(ROOT / "evaluate_fid.py"), "--feature-extractor", "fashion", "--device", "cpu", "--json", "out.json"]


@pytest.fixture
def good_npz(tmp_path) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "good.npz", arr_0=images)
    return tmp_path / "good.npz"


@pytest.mark.parametrize("case", BAD_NPZ)
def test_evaluate_a_bad_sample_npz(tmp_path, good_npz, case):
    np.savez(tmp_path / "bad.npz", **BAD_NPZ[case][0])
    refused([*EVAL, "good.npz", "bad.npz"], tmp_path, BAD_NPZ[case][1])


@pytest.mark.parametrize("case", BAD_STATS)
def test_evaluate_reference_statistics_that_are_not_finite(tmp_path, good_npz, case):
    np.savez(tmp_path / "ref.npz", feature_extractor=np.array("fashion"), **BAD_STATS[case][0])
    refused([*EVAL, "ref.npz", "good.npz"], tmp_path, BAD_STATS[case][1])


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_evaluate_an_image_folder_with_a_bad_file(tmp_path, good_npz, case):
    save_images(tmp_path / "samples")
    BAD_IMAGES[case][0](tmp_path / "samples")
    refused([*EVAL, "good.npz", "samples"], tmp_path, BAD_IMAGES[case][1])


def test_an_image_folder_of_mixed_modes_is_read_as_rgb_with_one_warning(tmp_path):
    """L, RGB, P and CMYK (ImageNet holds grey and CMYK JPEGs) are read as RGB; other files are skipped."""
    d = tmp_path / "mixed"
    d.mkdir()
    Image.new("L", (8, 8), 77).save(d / "0.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(d / "1.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(d / "2.jpg")  # pure red
    Image.new("RGB", (8, 8), (0, 0, 200)).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "3.png")
    (d / "notes.txt").write_text("not an image\n")
    with pytest.warns(UserWarning, match="mixes image modes CMYK, L, P, RGB; every image is read as RGB"):
        images = FolderImages(d)
    (batch,) = images.batches(8)
    assert batch.shape == (4, 8, 8, 3) and images.count == 4
    assert batch[0, 0, 0].tolist() == [77, 77, 77] and batch[1, 0, 0].tolist() == [1, 2, 3]
    assert batch[3, 0, 0].tolist() == [0, 0, 200]
    assert np.abs(batch[2].astype(int) - [255, 0, 0]).max() <= 2  # JPEG rounding


REFERENCE = [
    str(ROOT / "make_reference.py"),
    *"images ref.npz --image-size 28 --feature-extractor fashion --device cpu".split(),
]
BAD_FOLDERS = {  # what make_reference.py gets instead of an image folder -> the message
    "a folder that does not exist": (lambda d: None, "images does not exist or is not a directory"),
    "an empty folder": (lambda d: d.mkdir(), "images holds no PNG or JPEG images"),
    "a single image": (lambda d: save_images(d, 1), "images holds 1 image; a covariance needs at least 2"),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_make_reference_from_a_folder_with_a_bad_file(tmp_path, case):
    save_images(tmp_path / "images/cat")
    BAD_IMAGES[case][0](tmp_path / "images/cat")
    refused(REFERENCE, tmp_path, BAD_IMAGES[case][1])


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_make_reference_from_a_bad_folder(tmp_path, case):
    BAD_FOLDERS[case][0](tmp_path / "images")
    refused(REFERENCE, tmp_path, BAD_FOLDERS[case][1])


def test_make_reference_into_a_file_that_is_not_npz(tmp_path):
    save_images(tmp_path / "images")
    refused([*REFERENCE[:2], "ref.txt", *REFERENCE[3:]], tmp_path, "ref.txt must be an .npz path")


EXTRACT = ["--out", "latents", "--image-size", "16", "--shard-size", "2", "--batch-size", "2", "--num-workers", "0"]


@pytest.fixture(scope="module")
def vae(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vae") / "vae"
    save_tiny_vae(path)
    return path


@pytest.mark.parametrize("case", [c for c in BAD_IMAGES if c != "a truncated image"])
def test_extract_an_image_folder_with_a_bad_file(tmp_path, vae, case):
    save_images(tmp_path / "images/cat", mode="RGB")
    BAD_IMAGES[case][0](tmp_path / "images/cat")
    cmd = [str(ROOT / "extract_features.py"), "--data-path", "images", "--vae", str(vae), *EXTRACT]
    refused(cmd, tmp_path, BAD_IMAGES[case][1])


def test_extract_a_truncated_image_keeps_the_shards_before_it_and_resumes(tmp_path, vae):
    """Data that breaks past its header is only found when encoded: one line and exit 2 then, the finished shards
    kept, no temporaries; once the image is replaced the re-run completes."""
    save_images(tmp_path / "images/cat", 6, mode="RGB")
    good = (tmp_path / "images/cat/4.png").read_bytes()
    truncate(tmp_path / "images/cat/4.png")
    cmd = [sys.executable, str(ROOT / "extract_features.py"), "--data-path", "images", "--vae", str(vae), *EXTRACT]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("rank 0:")]  # bar
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith("extract_features.py: error: ")
    assert "images/cat/4.png is not a readable image (image file is truncated" in lines[0]
    assert sorted(p.name for p in (tmp_path / "latents").iterdir()) == ["shard-00000.npy", "shard-00001.npy"]
    (tmp_path / "images/cat/4.png").write_bytes(good)
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert res.returncode == 0 and (tmp_path / "latents/manifest.json").exists(), res.stderr[-2000:]


def test_extract_mixed_modes_are_read_as_rgb_and_other_files_skipped(tmp_path, vae):
    d = tmp_path / "images/cat"
    save_images(d, 1, "L")
    save_images(d, 1, "RGB", 1)
    Image.new("CMYK", (28, 28), (0, 255, 255, 0)).save(d / "2.jpg")
    (d / "notes.txt").write_text("not an image\n")
    cmd = [sys.executable, str(ROOT / "extract_features.py"), "--data-path", "images", "--vae", str(vae), *EXTRACT]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "wrote 3 images in 2 shards" in res.stdout
