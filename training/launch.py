"""What the launchers researchers type hand to train.py: accelerate's environment and SLURM's.

`accelerate launch` exports RANK / WORLD_SIZE / LOCAL_RANK as torchrun does, plus its own settings as
ACCELERATE_* variables. Two of them change what a run computes, so they are honoured or refused, never ignored:
- ACCELERATE_MIXED_PRECISION (no | fp16 | bf16 | fp8) sets ``--precision`` when the flag and the config leave it
  at its default; "no" is accelerate's default, exported whether or not it was asked for, so it sets nothing.
- ACCELERATE_GRADIENT_ACCUMULATION_STEPS sets ``--grad-accum`` the same way (accelerate exports it only with
  DeepSpeed, which train.py refuses; otherwise pass ``--grad-accum`` to train.py itself).

``python -m training.launch slurm`` prints torchrun's rendezvous flags for the node it runs on, from SLURM's
variables (tools/slurm_train.sbatch uses it).
"""

import os
import re
import sys
from collections.abc import Mapping

ACCELERATE_PRECISION = {"fp16": "fp16", "bf16": "bf16"}


def accelerate_overrides(env: Mapping[str, str], given: Mapping[str, object]) -> dict[str, object]:
    """The train.py settings accelerate's launcher asked for: ``{"precision": ..., "grad_accum": ...}``.
    ``given`` holds the values set by a flag or the config; a different value there is refused (ValueError)."""
    out: dict[str, object] = {}
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise ValueError("accelerate launch --use_deepspeed is not supported; launch without DeepSpeed")
    mixed = env.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if mixed != "no":
        if mixed not in ACCELERATE_PRECISION:
            raise ValueError(f"accelerate's --mixed_precision {mixed} is not supported; use no, fp16 or bf16")
        out["precision"] = ACCELERATE_PRECISION[mixed]
    if "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" in env:
        out["grad_accum"] = int(env["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"])
    for key, value in out.items():
        if key in given and given[key] != value:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"accelerate asks for {flag.lstrip('-')} {value}, but {flag} is {given[key]}; set one of them only"
            )
    return out


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list, e.g. ``gpu[01-03,07],login1`` -> gpu01 gpu02 gpu03 gpu07 login1, in order
    (what ``scontrol show hostnames`` prints; zero padding is kept)."""
    hosts = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            hosts += [f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi or lo) + 1)]
    return hosts


def slurm_torchrun_args(env: Mapping[str, str], port: int = 29500) -> list[str]:
    """torchrun's flags for this node of a SLURM job: one torchrun per node (``srun --ntasks-per-node=1``), as
    many processes as the node has GPUs, rendezvous (c10d, which numbers the nodes) on the job's first host."""
    try:
        nodes = int(env["SLURM_NNODES"])
        head = expand_nodelist(env["SLURM_JOB_NODELIST"])[0]
        job = env["SLURM_JOB_ID"]
    except KeyError as err:
        raise ValueError(f"not inside a SLURM job step: {err.args[0]} is unset") from None
    gpus = env.get("SLURM_GPUS_ON_NODE") or env.get("SLURM_GPUS_PER_NODE", "1")
    gpus = gpus.rpartition(":")[2]  # "h100:8" -> "8"
    return [
        f"--nnodes={nodes}",
        f"--nproc_per_node={int(gpus)}",
        f"--rdzv_id={job}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={head}:{port}",
    ]


if __name__ == "__main__":
    if sys.argv[1:] != ["slurm"]:
        sys.exit("usage: python -m training.launch slurm")
    try:
        print(" ".join(slurm_torchrun_args(os.environ, int(os.environ.get("MASTER_PORT", 29500)))))
    except ValueError as err:
        sys.exit(f"training.launch: error: {err}")
