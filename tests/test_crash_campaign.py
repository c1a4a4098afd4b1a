"""The short kill -9 campaign (two kills per command, aimed at saves) and the campaign's own checks."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.crash_campaign import JOBS, complete, differences, temp_files, temporaries

ROOT = Path(__file__).resolve().parents[1]


def test_short_campaign_every_kill_lands_in_a_save_and_every_result_is_bitwise_equal(tmp_path):
    flags = "--kills 2 --chain 2 --aim saves --pause 0.05".split()
    cmd = [sys.executable, "-m", "tests.crash_campaign", *flags, "--out", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "kills.csv")))
    for job in JOBS:
        kills = [r for r in rows if r["job"] == job and r["killed"] == "1"]
        finals = [r for r in rows if r["job"] == job and r["attempt"] == "final"]
        assert len(kills) == 2 and all(r["in_save"] and r["exit"] == "-9" for r in kills), (job, kills)
        assert finals and all(r["exit"] == "0" and not r["problems"] and not r["in_save"] for r in finals)


def test_the_checks_catch_a_changed_file_a_cut_checkpoint_a_missing_one_and_a_leftover(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    for d in (ref, out):
        (d / "latents").mkdir(parents=True)
        (d / "latents/shard-00000.npy").write_bytes(b"same")
    (ref / "latents/manifest.json").write_bytes(b"{}")
    assert differences(JOBS["extract"], out, ref) == []
    assert complete(JOBS["extract"], out, ref) == ["latents/manifest.json is missing"]
    (out / "latents/manifest.json").write_bytes(b"{ }")
    (out / "latents/.shard-00001.npy.abcd.tmp").write_bytes(b"")
    assert temporaries(out) == ["shard-00001.npy"]
    assert temporaries(out, temp_files(out)) == []  # an earlier kill's leftover is not a new save
    problems = complete(JOBS["extract"], out, ref)
    assert problems == [
        "latents/manifest.json: bytes differ from the reference",
        "temporary files left after the run finished: shard-00001.npy",
    ]

    ref, out = tmp_path / "train-ref", tmp_path / "train-out"
    state = {"model": {"w": torch.ones(3)}, "ema": {"w": torch.zeros(3)}, "step": 2}
    for d in (ref, out):
        (d / "checkpoints").mkdir(parents=True)
        torch.save(state, d / "checkpoints/0000002.pt")
    assert differences(JOBS["train-1"], out, ref) == []
    torch.save({**state, "ema": {"w": torch.full((3,), 1e-30)}}, out / "checkpoints/0000002.pt")
    assert differences(JOBS["train-1"], out, ref) == ["checkpoints/0000002.pt: model or EMA differs from the reference"]
    whole = (ref / "checkpoints/0000002.pt").read_bytes()
    (out / "checkpoints/0000002.pt").write_bytes(whole[: len(whole) // 2])
    [problem] = differences(JOBS["train-1"], out, ref)
    assert "unreadable or truncated" in problem
