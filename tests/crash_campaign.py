"""kill -9 campaigns: start a command, SIGKILL it at a random moment, check its output tree, re-run it to the end,
and compare the result bit for bit with an uninterrupted run.

    python -m tests.crash_campaign --kills 30                       # the long campaign, every job (repo root)
    python -m tests.crash_campaign --kills 3 --jobs train-1,extract

Jobs (tiny, on the embedded default or tiny random data): train-1 and train-2 (``train.py``, 1 process and
``torchrun`` with 2), sample-1 and sample-2 (``sample_ddp.py``), extract (``extract_features.py``). Each job first
runs once uninterrupted: the reference, and the length T of the window the kill moments are drawn from.

A chain: start the job in a fresh directory, kill it (every process of it, torchrun's workers included) at a
moment uniform in [0, T) (with ``--aim saves``: at the first save that starts after that moment), check the tree,
start it again (``--resume auto`` for training, the same command for the others), kill again, ... ``--chain``
kills, then run it to the end and compare. Killed runs go through tests/slow_writes.py, which pauses inside every
atomic write, so many kills land inside a save; such a kill is seen as a temporary file left behind.

After every kill, every file under a final name must equal the reference's (checkpoints: model, EMA and step;
everything else: its bytes). After the last run, the same for the whole tree, and no temporary file may be left.
Rows go to OUT/kills.csv; OUT/summary.md holds the table of docs/reliability.md. Exit code 1 if anything failed.
"""

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.processes import launcher
from tests.stand_ins import save_tiny_vae
from training.checkpoint import list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

MARK = "CRASH_CAMPAIGN_RUN"  # an environment variable every process of one run inherits, torchrun's workers too


@dataclass(frozen=True)
class Job:
    name: str
    nproc: int
    script: str
    kind: str  # train | sample | extract: what the output is and how a re-run resumes

    def args(self, fixture: Path, out: Path) -> list[str]:
        if self.kind == "train":
            tiny = "--model DiT-T/4 --global-batch-size 4 --num-workers 0 --max-steps 8 --ckpt-every 2 --log-every 2"
            return [*tiny.split(), "--keep-checkpoints", "0", "--results-dir", str(out), "--resume", "auto"]
        if self.kind == "sample":
            sampler = "--num-samples 40 --per-proc-batch-size 4 --sampler ddpm --steps 4 --cfg-scale 1".split()
            ckpt = fixture / "run/checkpoints/0000001.pt"
            return ["--ckpt", str(ckpt), *sampler, "--out", str(out / "s.npz"), "--png-dir", str(out / "png")]
        encode = "--image-size 16 --shard-size 2 --batch-size 2 --num-workers 0".split()
        paths = ["--data-path", str(fixture / "images"), "--out", str(out / "latents"), "--vae", str(fixture / "vae")]
        return [*paths, *encode]


JOBS = {
    job.name: job
    for job in (
        Job("train-1", 1, "train.py", "train"),
        Job("train-2", 2, "train.py", "train"),
        Job("sample-1", 1, "sample_ddp.py", "sample"),
        Job("sample-2", 2, "sample_ddp.py", "sample"),
        Job("extract", 1, "extract_features.py", "extract"),
    )
}


def make_fixture(root: Path) -> None:
    """A 1-step checkpoint to sample from, and 12 random images in 2 classes with a tiny random VAE to encode."""
    if (root / "done").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    run([*launcher(), str(ROOT / "train.py"), *JOBS["train-1"].args(root, root / "run")[:-2], "--max-steps", "1"])
    rng = np.random.default_rng(0)
    for i in range(12):
        folder = root / "images" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (18, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    save_tiny_vae(root / "vae")
    (root / "done").touch()


def env(marker: str = "") -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", MARK: marker}


def run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env())
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} … failed ({res.returncode}): {res.stderr.strip()[-2000:]}")


def command(job: Job, fixture: Path, out: Path, slow: bool) -> list[str]:
    script = [str(ROOT / "tests/slow_writes.py")] if slow else []
    return [*launcher(job.nproc), *script, str(ROOT / job.script), *job.args(fixture, out)]


def marked(marker: str) -> list[int]:
    """The pids whose environment carries ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{MARK}={marker}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return pids


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_all(marker: str, proc: subprocess.Popen) -> None:
    """SIGKILL every process of the run at once, as a vanished node would, until none is left."""
    while pids := marked(marker):
        kill(pids)
        proc.poll()
        time.sleep(0.05)
    proc.wait()


def final_files(out: Path) -> list[Path]:
    """The output files under final names (temporary files, logs and TensorBoard are not results)."""
    skip = {"log.txt", "metrics.csv", "config.json"}
    return sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and not p.name.endswith(".tmp") and p.name not in skip and "tensorboard" not in p.parts
    )


def temp_files(out: Path) -> frozenset[Path]:
    """The temporary files under ``out``: atomic writes leave ``.NAME.XXXX.tmp`` while in progress."""
    return frozenset(out.rglob(".*.tmp"))


def temporaries(out: Path, before: frozenset[Path] = frozenset()) -> list[str]:
    """The final names of the files being saved, from their temporary files. Those in ``before`` (left by an
    earlier kill, and not yet removed by the run that cleans them up) are not counted."""
    return sorted(p.name[1:].rsplit(".", 2)[0] for p in temp_files(out) - before)


def differences(job: Job, out: Path, ref: Path) -> list[str]:
    """Files under final names in ``out`` that are unreadable or differ from the reference's."""
    problems = []
    for path in final_files(out):
        twin = ref / path.relative_to(out)
        if not twin.exists():
            problems.append(f"{path.relative_to(out)} has no counterpart in the reference")
        elif job.kind == "train" and path.suffix == ".pt":
            try:
                a, b = load_checkpoint(path), load_checkpoint(twin)
            except ValueError as err:
                problems.append(str(err))
                continue
            same = a["step"] == b["step"] and all(
                a[part].keys() == b[part].keys() and all(torch.equal(a[part][k], b[part][k]) for k in a[part])
                for part in ("model", "ema")
            )
            if not same:
                problems.append(f"{path.relative_to(out)}: model or EMA differs from the reference")
        elif path.read_bytes() != twin.read_bytes():
            problems.append(f"{path.relative_to(out)}: bytes differ from the reference")
    return problems


def complete(job: Job, out: Path, ref: Path) -> list[str]:
    """After the last run: the whole reference tree is there, equal, with no temporary file left."""
    problems = differences(job, out, ref)
    have = {p.relative_to(out) for p in final_files(out)}
    problems += [f"{p.relative_to(ref)} is missing" for p in final_files(ref) if p.relative_to(ref) not in have]
    if job.kind == "train" and len(list_checkpoints(out / "checkpoints")) != 4:
        problems.append("not every checkpoint is there")
    if left := temporaries(out):
        problems.append(f"temporary files left after the run finished: {' '.join(left)}")
    return problems


def wait(proc: subprocess.Popen, delay: float, marker: str, saves: Path | None, before: frozenset[Path]) -> bool:
    """Wait ``delay`` seconds, then (aiming at saves) until a temporary file not in ``before`` shows under ``saves``,
    and SIGKILL the run's processes found just before it showed: on a loaded machine a scan of /proc after it
    showed can outlast the save. True if the process finished first."""
    try:
        proc.wait(delay)
        return True
    except subprocess.TimeoutExpired:
        pass
    while saves is not None:
        pids = marked(marker)
        if temporaries(saves, before):
            kill(pids)
            return False
        if proc.poll() is not None:
            return True
        time.sleep(0.01)
    return False


def campaign(job: Job, kills: int, chain: int, aim: str, work: Path, rng: random.Random, rows: list[dict]) -> None:
    fixture, ref, timing = work / "fixture", work / job.name / "ref", work / job.name / "ref-seconds.txt"
    make_fixture(fixture)
    if not timing.exists():
        shutil.rmtree(ref, ignore_errors=True)
        tic = time.time()
        run(command(job, fixture, ref, slow=True))
        timing.write_text(f"{time.time() - tic:.2f}\n")
    window = float(timing.read_text())
    sent = number = 0
    log = work / job.name / "stderr.txt"
    while sent < kills:
        out = work / job.name / f"chain{number}"
        shutil.rmtree(out, ignore_errors=True)
        for attempt in range(min(chain, kills - sent)):
            marker = uuid.uuid4().hex
            left = temp_files(out)  # an earlier kill's, which the run removes as it starts
            with open(log, "wb") as stderr:
                proc = subprocess.Popen(
                    command(job, fixture, out, slow=True), env=env(marker), stdout=subprocess.DEVNULL, stderr=stderr
                )
            delay = rng.uniform(0, window)
            finished = wait(proc, delay, marker, out if aim == "saves" else None, left)
            if not finished:
                kill_all(marker, proc)
            err = log.read_text(errors="replace").strip().splitlines()
            row = {
                "job": job.name,
                "chain": number,
                "attempt": attempt,
                "delay_s": f"{delay:.2f}",
                "killed": int(not finished),
                "in_save": " ".join(temporaries(out, left)),
                "files": len(final_files(out)),
                "exit": proc.returncode,
            }
            problems = differences(job, out, ref)
            if finished and proc.returncode:
                problems.append(f"the re-run failed: {err[-1] if err else proc.returncode}")
            row["problems"] = "; ".join(problems)
            rows.append(row)
            sent += not finished
            if finished:
                break
        res = subprocess.run(
            command(job, fixture, out, slow=False), capture_output=True, text=True, env=env(), timeout=900
        )
        problems = complete(job, out, ref) if res.returncode == 0 else [f"final run: {res.stderr.strip()[-300:]}"]
        rows.append(
            {
                "job": job.name,
                "chain": number,
                "attempt": "final",
                "delay_s": "",
                "killed": 0,
                "in_save": " ".join(temporaries(out)),
                "files": len(final_files(out)),
                "exit": res.returncode,
                "problems": "; ".join(problems),
            }
        )
        if not problems:
            shutil.rmtree(out)
        number += 1
        print(f"{job.name}: {sent}/{kills} kills", file=sys.stderr, flush=True)


def summary(rows: list[dict]) -> str:
    lines = [
        "| job | kills sent | in a save | re-runs after a kill | final results bitwise equal | files lost or corrupt |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["job"] for r in rows):
        mine = [r for r in rows if r["job"] == name]
        kills = [r for r in mine if r["attempt"] != "final" and int(r["killed"])]
        finals = [r for r in mine if r["attempt"] == "final"]
        reruns = sum(
            1 for prev, r in zip(mine, mine[1:], strict=False) if prev["chain"] == r["chain"] and int(prev["killed"])
        )
        bad = sum(1 for r in mine if r["attempt"] != "final" and r["problems"])
        equal = sum(1 for r in finals if not r["problems"])
        lines.append(
            f"| {name} | {len(kills)} | {sum(1 for r in kills if r['in_save'])} | {reruns} | "
            f"{equal} of {len(finals)} | {bad} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=30, help="kills per job")
    p.add_argument("--chain", type=int, default=3, help="kills per chain before the run may finish")
    p.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {', '.join(JOBS)}")
    p.add_argument(
        "--aim",
        choices=("random", "saves"),
        default="random",
        help="random: kill at the drawn moment; saves: at the first save after it",
    )
    p.add_argument("--pause", type=float, default=0.3, help="seconds each atomic write of a killed run pauses, twice")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "crash")
    args = p.parse_args()
    if unknown := [j for j in args.jobs.split(",") if j not in JOBS]:
        p.error(f"unknown job(s) {', '.join(unknown)}; choose from {', '.join(JOBS)}")
    torch.set_flush_denormal(True)
    os.environ["SLOW_WRITES_S"] = str(args.pause)
    rng, rows = random.Random(args.seed), []
    for name in args.jobs.split(","):
        campaign(JOBS[name], args.kills, args.chain, args.aim, args.out / "work", rng, rows)
    with open(args.out / "kills.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = summary(rows)
    (args.out / "summary.md").write_text(table)
    print(table)
    failed = [r for r in rows if r["problems"]]
    for r in failed:
        print(f"{r['job']} chain {r['chain']} attempt {r['attempt']}: {r['problems']}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
