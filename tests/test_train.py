"""train.py end to end: exact resume, DDP over gloo against one process, logs, checkpoints, bad input."""

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from data.latents import shard_name, write_manifest, write_shard
from diffusion import create_diffusion
from diffusion.bands import BAND_NAMES
from models import check_model_name
from sampling import load_for_sampling
from tests.processes import launcher
from training.checkpoint import load_checkpoint
from training.config import parse_args

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "--model DiT-T/4 --global-batch-size 4 --num-workers 0 --log-every 1 --ckpt-every 2 --keep-checkpoints 0 "
    "--lr 1e-3 --ema-decay 0.9"
).split()


def run(args, nproc=1, expect=0, script=ROOT / "train.py"):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([*launcher(nproc), str(script), *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == expect, out.stderr[-3000:]
    return out


def params(path):
    state = load_checkpoint(path)
    return {f"{part}.{k}": v for part in ("model", "ema") for k, v in state[part].items()}


def logged(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_the_timestep_density_reaches_training(latents, tmp_path):
    """Laplace(0, 0.5) in log SNR almost never draws SNR < 0.01 (probability 5e-5), which uniform t draws 6.4% of
    the time on the cosine schedule. Over 128 draws (32 steps of 4) uniform t misses that band with probability
    0.936^128 = 2e-4 and Laplace hits it with probability 0.6%, so its logged x0 error (NaN where not drawn) tells
    the two densities apart."""
    hits = {}
    for density in ("uniform", "laplace"):
        flags = ["--max-steps", "32", "--ckpt-every", "32", "--timestep-sampling", density]
        run([*TINY, "--data-path", str(latents), *flags, "--results-dir", str(tmp_path / density)])
        rows = logged(tmp_path / density).values()
        assert len(rows) == 32
        hits[density] = sum(np.isfinite(float(r["x0_mse_snr_lt_0.01"])) for r in rows)
    assert hits["uniform"] > 0 and hits["laplace"] == 0


@pytest.mark.parametrize("nproc", [1, 2])
def test_interrupted_and_resumed_equals_uninterrupted_bitwise(latents, tmp_path, nproc):
    base = [*TINY, "--data-path", str(latents), "--class-dropout", "0.2"]
    run([*base, "--max-steps", "4", "--results-dir", str(tmp_path / "a")], nproc)
    run([*base, "--max-steps", "2", "--results-dir", str(tmp_path / "b")], nproc)
    with open(tmp_path / "b/metrics.csv", "a") as f:  # what a run killed after logging step 3 leaves
        f.write("3,9.99," + "0," * 10 + "\n4,9.9")
    run([*base, "--max-steps", "4", "--results-dir", str(tmp_path / "b"), "--resume", "auto"], nproc)
    a, b = params(tmp_path / "a/checkpoints/0000004.pt"), params(tmp_path / "b/checkpoints/0000004.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "b/metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4]  # the killed run's rows after step 2 replaced
    assert {k: r["loss"] for k, r in logged(tmp_path / "b").items()} == {
        k: r["loss"] for k, r in logged(tmp_path / "a").items()
    }
    assert load_checkpoint(tmp_path / "b/checkpoints/0000004.pt")["opt"] is not None
    assert "resumed from" in (tmp_path / "b/log.txt").read_text()


def test_learned_uncertainty_trains_logs_and_resumes_bitwise(latents, tmp_path):
    """--learned-uncertainty: u(λ) is saved with the model, resumes bit for bit, moves away from its zero start
    and is logged per band; sampling ignores it."""
    base = [*TINY, "--data-path", str(latents), "--learned-uncertainty", "--lr", "1e-2"]
    run([*base, "--max-steps", "4", "--results-dir", str(tmp_path / "a")])
    run([*base, "--max-steps", "2", "--results-dir", str(tmp_path / "b")])
    run([*base, "--max-steps", "4", "--results-dir", str(tmp_path / "b"), "--resume", "auto"])
    a, b = (load_checkpoint(tmp_path / f"{r}/checkpoints/0000004.pt") for r in "ab")
    for part in ("model", "ema", "uncertainty"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert a["uncertainty"]["linear.bias"].abs().item() > 0
    row = logged(tmp_path / "a")[4]
    assert any(np.isfinite(float(row[f"u_{name}"])) for name in BAND_NAMES)
    ckpt = sorted((tmp_path / "a/checkpoints").iterdir())[-1]  # into another run directory, or the run's own
    base = [*TINY, "--data-path", str(latents), "--max-steps", "6"]
    out = run([*base, "--results-dir", str(tmp_path / "fresh"), "--resume", str(ckpt)], expect=2)
    assert "was trained with --learned-uncertainty" in out.stderr
    out = run([*base, "--results-dir", str(tmp_path / "a"), "--resume", "auto"], expect=2)
    assert "holds a run with learned_uncertainty = True, and this one has False" in out.stderr
    model, _ = load_for_sampling(str(tmp_path / "a/checkpoints/0000004.pt"))  # the model alone, strictly loaded
    assert all(torch.equal(v, a["ema"][k]) for k, v in model.state_dict().items())


def test_two_processes_match_one_process_and_agree(latents, tmp_path):
    """Same global batch, same draws, label dropout included (they are made per global batch): the all-reduced
    loss of 2 ranks is the 1-process loss, and DDP's averaged gradients give the same weights up to float
    reduction order."""
    base = [*TINY, "--data-path", str(latents), "--class-dropout", "0.5", "--max-steps", "3"]
    run([*base, "--results-dir", str(tmp_path / "one")], 1)
    two = run([*base, "--results-dir", str(tmp_path / "two")], 2)
    one_log, two_log = logged(tmp_path / "one"), logged(tmp_path / "two")
    for step in (1, 2, 3):
        assert float(two_log[step]["loss"]) == pytest.approx(float(one_log[step]["loss"]), rel=1e-4)
    a, b = params(tmp_path / "one/checkpoints/0000003.pt"), params(tmp_path / "two/checkpoints/0000003.pt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert "weights identical on all 2 ranks: True" in (tmp_path / "two/log.txt").read_text()
    assert (tmp_path / "two/config.json").exists() and list((tmp_path / "two/tensorboard").iterdir())
    assert "Traceback" not in two.stderr


def test_two_processes_leave_no_thread_of_the_process_group_behind(latents, tmp_path):
    """After train.py's shutdown, each rank runs as many threads as a plain run: the gloo group was destroyed and
    its worker threads joined. A group left alive (importing torch._dynamo after it was made does that) makes
    ranks abort at exit now and then, when a worker releases an all-reduce's tensors during interpreter shutdown."""
    probe = tmp_path / "probe.py"  # train.py's main, then this rank's thread count into a file of its own
    probe.write_text(
        "import os, pathlib, runpy, sys\n"
        "out = pathlib.Path(sys.argv.pop(1))\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "(out / f\"threads{os.environ.get('RANK', '0')}\").write_text(str(len(os.listdir('/proc/self/task'))))\n"
    )
    base = [str(ROOT / "train.py"), *TINY, "--data-path", str(latents), "--max-steps", "2"]
    counts = {}
    for nproc in (1, 2):
        out = tmp_path / f"count{nproc}"
        out.mkdir()
        run([str(out), *base, "--results-dir", str(tmp_path / f"r{nproc}")], nproc, script=probe)
        counts[nproc] = sorted(f.read_text() for f in out.iterdir())
    assert len(counts[1]) == 1 and counts[2] == counts[1] * 2


def test_two_process_checkpoint_resumes_in_one_process(latents, tmp_path):
    base = [*TINY, "--data-path", str(latents), "--results-dir", str(tmp_path / "r")]
    run([*base, "--max-steps", "2"], 2)
    run([*base, "--max-steps", "3", "--resume", "auto"], 1)
    assert sorted(p.name for p in (tmp_path / "r/checkpoints").iterdir()) == ["0000002.pt", "0000003.pt"]


def test_embedded_default_trains_without_a_data_path(tmp_path):
    flags = "--model ViT-T/4 --global-batch-size 4 --max-steps 2 --num-workers 0 --log-every 1".split()
    out = run([*flags, "--results-dir", str(tmp_path / "f")])
    assert "Fashion-MNIST" in out.stdout
    state = load_checkpoint(tmp_path / "f/checkpoints/0000002.pt")
    assert state["model"]["x_embedder.proj.weight"].shape == (128, 1, 4, 4)
    assert state["model"]["y_embedder.weight"].shape == (11, 128)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--data-path", "/nonexistent"], "--data-path /nonexistent does not exist"),
        (["--model", "DiT-Q/4"], "unknown model 'DiT-Q/4'; choose one of"),
        (["--weighting", "minsnr"], "unknown weighting 'minsnr'"),
        (["--prediction", "score"], "unknown prediction 'score'"),
        (["--global-batch-size", "5"], "--global-batch-size 5 does not divide by 2 processes"),
        (["--timestep-sampling", "beta"], "argument --timestep-sampling: invalid choice: 'beta'"),
        (["--timestep-sampling", "laplace", "--laplace", "0", "0"], "the Laplace scale must be > 0, got 0.0"),
        (["--weighting", "edm", "--sigma-data", "-1"], "sigma_data must be > 0, got -1.0"),
        (["--grad-accum", "3"], "--grad-accum 3 does not divide the per-process batch 4"),
        (["--grad-accum", "0"], "--grad-accum must be >= 1, got 0"),
        (["--keep-every", "0"], "--keep-every must be >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(latents, tmp_path, extra, message):
    args = [*TINY, "--data-path", str(latents), "--max-steps", "1", "--results-dir", str(tmp_path / "x"), *extra]
    env_world = {"WORLD_SIZE": "2"} if "5" in extra else {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_world}
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "x/checkpoints").exists()


def test_resume_from_another_models_checkpoint_is_refused(latents, tmp_path):
    run([*TINY, "--data-path", str(latents), "--max-steps", "2", "--results-dir", str(tmp_path / "d")])
    ckpt = tmp_path / "d/checkpoints/0000002.pt"
    vit = [*TINY, "--model", "ViT-T/4", "--data-path", str(latents), "--max-steps", "3"]
    out = run([*vit, "--results-dir", str(tmp_path / "v"), "--resume", str(ckpt)], expect=2)
    assert f"--resume {ckpt} is a checkpoint of DiT-T/4, but --model is ViT-T/4" in out.stderr


def test_latents_that_do_not_fit_the_model_are_reported(tmp_path):
    m = np.ones((2, 2, 2, 4, 6, 6))
    write_shard(tmp_path / shard_name(0), m)
    shards = [{"file": shard_name(0), "labels": [0, 1]}]
    write_manifest(
        tmp_path, shards, classes=["a", "b"], vae="test", scale_factor=1.0, image_size=48, latent_shape=[4, 6, 6]
    )
    out = run([*TINY, "--data-path", str(tmp_path), "--max-steps", "1", "--results-dir", str(tmp_path / "x")], expect=2)
    assert "input_size 6 is not divisible by the patch size 4" in out.stderr


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_parse_and_flags_override_them(config):
    values = tomllib.loads(config.read_text())
    args = parse_args(["--config", str(config)])
    for key, value in values.items():
        assert getattr(args, key) == value, key
    check_model_name(args.model)
    create_diffusion(noise_schedule=args.noise_schedule, prediction=args.prediction, weighting=args.weighting)
    assert parse_args(["--config", str(config), "--lr", "0.5"]).lr == 0.5


def test_unknown_config_keys_are_refused(tmp_path):
    (tmp_path / "c.toml").write_text('model = "DiT-T/4"\nlearning_rate = 1.0\n')
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rate'\]"):
        parse_args(["--config", str(tmp_path / "c.toml")])


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "second, message",
    [
        ([], "already holds a run (config.json, metrics.csv, checkpoints); continue it with --resume auto"),
        (["--seed", "1"], "already holds a run"),
        (["--seed", "1", "--resume", "auto"], "holds a run with seed = 0, and this one has 1"),
        (["--snr-gamma", "2", "--resume", "auto"], "holds a run with snr_gamma = 5.0, and this one has 2.0"),
        (["--learned-uncertainty", "--resume", "auto"], "holds a run with learned_uncertainty = False"),
    ],
)
def test_a_second_start_never_loses_the_first_run(latents, tmp_path, second, message):
    base = [*TINY, "--data-path", str(latents), "--max-steps", "2", "--results-dir", str(tmp_path / "r")]
    run(base)
    before = snapshot(tmp_path / "r")
    out = run([*base, *second], expect=2)
    assert message in out.stderr and out.stderr.count("\n") == 1
    assert snapshot(tmp_path / "r") == before


def test_the_same_run_continues_and_appends(latents, tmp_path):
    keep = "--keep-checkpoints 1 --keep-every 4".split()
    base = [*TINY, "--data-path", str(latents), "--results-dir", str(tmp_path / "r"), *keep]
    run([*base, "--max-steps", "4"])
    run([*base, "--max-steps", "8", "--resume", "auto"])
    assert sorted(logged(tmp_path / "r")) == list(range(1, 9))
    assert [p.name for p in sorted((tmp_path / "r/checkpoints").iterdir())] == ["0000004.pt", "0000008.pt"]


def test_the_default_run_directory_names_the_seed_and_changed_loss_options(latents, tmp_path):
    changed = "--seed 3 --snr-gamma 2 --timestep-sampling laplace --learned-uncertainty".split()
    args = [*TINY, "--data-path", str(latents), "--max-steps", "1", *changed]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, check=True, capture_output=True, env=env
    )
    name = "DiT-T-4-x0-min_snr-snr_gamma2-laplace-learned_uncertainty-s3"
    assert [p.name for p in (tmp_path / "results").iterdir()] == [name]


@pytest.mark.parametrize("nproc", [1, 2])
def test_gradient_accumulation_trains_the_whole_batch_model(latents, tmp_path, nproc):
    """K micro-batches per process: the same draws sliced, so the same loss and, up to float summation order, the
    same weights as one process with the whole batch (label dropout and learned uncertainty on)."""
    flags = "--class-dropout 0.5 --learned-uncertainty --max-steps 3 --grad-clip 1".split()
    base = [*TINY, "--data-path", str(latents), *flags]
    run([*base, "--results-dir", str(tmp_path / "whole")])
    run([*base, "--results-dir", str(tmp_path / "accum"), "--grad-accum", str(4 // nproc)], nproc)
    whole, accum = logged(tmp_path / "whole"), logged(tmp_path / "accum")
    for step in (1, 2, 3):
        for key in ("loss", "grad_norm", "x0_mse_snr_0.1-1", "u_snr_0.1-1"):
            a, b = float(whole[step][key]), float(accum[step][key])
            assert b == pytest.approx(a, rel=1e-4, nan_ok=True), (step, key)
    a, b = params(tmp_path / "whole/checkpoints/0000003.pt"), params(tmp_path / "accum/checkpoints/0000003.pt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert max((a[k] - b[k]).abs().max().item() for k in a) > 0 or nproc == 1  # really another summation


def test_gradient_accumulation_resumes_bitwise(latents, tmp_path):
    base = [*TINY, "--data-path", str(latents), "--grad-accum", "2", "--class-dropout", "0.2"]
    run([*base, "--max-steps", "4", "--results-dir", str(tmp_path / "a")])
    run([*base, "--max-steps", "2", "--results-dir", str(tmp_path / "b")])
    run([*base, "--max-steps", "4", "--results-dir", str(tmp_path / "b"), "--resume", "auto"])
    a, b = params(tmp_path / "a/checkpoints/0000004.pt"), params(tmp_path / "b/checkpoints/0000004.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
