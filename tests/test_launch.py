"""The launchers' environments: accelerate's settings honoured or refused, SLURM's turned into torchrun flags."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.processes import free_port, launcher
from training.checkpoint import load_checkpoint
from training.config import parse_args
from training.launch import accelerate_overrides, expand_nodelist, slurm_torchrun_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "env, given, expected",
    [
        ({}, {}, {}),
        ({"ACCELERATE_MIXED_PRECISION": "no"}, {"precision": "bf16"}, {}),  # accelerate's default asks for nothing
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, {}, {"precision": "bf16"}),
        ({"ACCELERATE_MIXED_PRECISION": "FP16"}, {"precision": "fp16"}, {"precision": "fp16"}),
        ({"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"}, {}, {"grad_accum": 4}),
    ],
)
def test_accelerate_settings_map_to_train_flags(env, given, expected):
    assert accelerate_overrides(env, given) == expected


@pytest.mark.parametrize(
    "env, given, message",
    [
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, {"precision": "fp32"}, "accelerate asks for precision bf16, but"),
        ({"ACCELERATE_MIXED_PRECISION": "fp8"}, {}, "--mixed_precision fp8 is not supported"),
        ({"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "2"}, {"grad_accum": 4}, "asks for grad-accum 2"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, {}, "--use_deepspeed is not supported"),
    ],
)
def test_conflicting_accelerate_settings_are_refused(env, given, message):
    with pytest.raises(ValueError, match=message):
        accelerate_overrides(env, given)


def test_parse_args_takes_accelerate_precision_unless_a_flag_or_the_config_sets_it(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert parse_args([]).precision == "bf16"
    assert parse_args(["--precision", "bf16"]).precision == "bf16"
    with pytest.raises(ValueError, match="but --precision is fp32"):
        parse_args(["--precision=fp32"])
    config = tmp_path / "c.toml"
    config.write_text('precision = "fp16"\n')
    with pytest.raises(ValueError, match="but --precision is fp16"):
        parse_args(["--config", str(config)])


def test_a_conflicting_accelerate_setting_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACCELERATE_MIXED_PRECISION": "bf16"}
    args = ["--precision", "fp32", "--results-dir", str(tmp_path / "r")]
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "accelerate asks for precision" in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("node7", ["node7"]),
        ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
        ("a[9-11],login1,b[2]", ["a9", "a10", "a11", "login1", "b2"]),
    ],
)
def test_slurm_nodelists_expand_as_scontrol_does(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_slurm_variables_become_a_c10d_rendezvous_on_the_first_host():
    env = {"SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[12-13]", "SLURM_JOB_ID": "4242", "SLURM_GPUS_ON_NODE": "8"}
    expected = "--nnodes=2 --nproc_per_node=8 --rdzv_id=4242 --rdzv_backend=c10d --rdzv_endpoint=gpu12:29511"
    assert slurm_torchrun_args(env, 29511) == expected.split()
    assert "--nproc_per_node=4" in slurm_torchrun_args(
        {**env, "SLURM_GPUS_ON_NODE": "", "SLURM_GPUS_PER_NODE": "h100:4"}
    )
    with pytest.raises(ValueError, match="SLURM_JOB_ID is unset"):
        slurm_torchrun_args({k: v for k, v in env.items() if k != "SLURM_JOB_ID"})


def test_the_sbatch_script_is_valid_bash_and_calls_the_mapping():
    script = ROOT / "tools" / "slurm_train.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "-m training.launch slurm" in script.read_text()


def accelerate_launch(args: list[str], extra: list[str], port: int) -> None:
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"]
    cmd = [*launch, "--num_machines", "1", "--main_process_port", str(port), *extra, str(ROOT / "train.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def test_accelerate_launch_trains_what_torchrun_trains(latents, tmp_path):
    """Two CPU processes under `accelerate launch` form the same gloo group as under torchrun: the same weights to
    the bit; its --mixed_precision reaches the run."""
    flags = "--model DiT-T/4 --global-batch-size 4 --num-workers 0 --max-steps 2 --ckpt-every 2".split()
    args = [*flags, "--data-path", str(latents)]
    cmd = [*launcher(2), str(ROOT / "train.py"), *args, "--results-dir", str(tmp_path / "torchrun")]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    accelerate_launch([*args, "--results-dir", str(tmp_path / "accelerate")], ["--mixed_precision", "no"], free_port())
    a = load_checkpoint(tmp_path / "torchrun/checkpoints/0000002.pt")
    b = load_checkpoint(tmp_path / "accelerate/checkpoints/0000002.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    bf16 = [*args, "--max-steps", "1", "--results-dir", str(tmp_path / "bf16")]
    accelerate_launch(bf16, ["--mixed_precision", "bf16"], free_port())
    assert json.loads((tmp_path / "bf16/config.json").read_text())["precision"] == "bf16"


def test_resume_auto_is_refused_when_two_nodes_see_different_checkpoints(latents, tmp_path):
    """Two torchrun 'nodes' on this machine, each in its own working directory, given the same relative
    --results-dir: the same path with other contents, as on disks that are not shared. One sees a checkpoint, the
    other none; both refuse --resume auto in one line, and the checkpoint stays as it was."""
    flags = ["--model", "DiT-T/4", "--global-batch-size", "4", "--num-workers", "0", "--data-path", str(latents)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    node = {0: tmp_path / "node0", 1: tmp_path / "node1"}
    for d in node.values():
        d.mkdir()
    train = [sys.executable, str(ROOT / "train.py"), *flags, "--results-dir", "run", "--max-steps", "2"]
    subprocess.run([*train, "--ckpt-every", "2"], cwd=node[0], check=True, capture_output=True, env=env)
    saved = node[0] / "run/checkpoints/0000002.pt"
    before = saved.read_bytes()
    port = free_port()
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank)]
            + ["--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port)]
            + [str(ROOT / "train.py"), *flags, "--results-dir", "run", "--max-steps", "4", "--resume", "auto"],
            cwd=node[rank],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in nodes]
    for p, (_, err) in zip(nodes, outs, strict=True):
        assert p.returncode != 0
        assert "the ranks see different newest checkpoints" in err and "every node shares" in err, err[-2000:]
    assert saved.read_bytes() == before and sorted(p.name for p in saved.parent.iterdir()) == ["0000002.pt"]
    assert not (node[1] / "run/checkpoints").exists() or not any((node[1] / "run/checkpoints").iterdir())
