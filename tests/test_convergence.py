"""tools/curves.py and tools/convergence.py: the read-out arithmetic against hand-computed numbers, reading runs and
curves files without mixing them up, the command's output and refusals, and scoring two tiny runs resumably."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools.curves import (
    group,
    ladder,
    load,
    plot_speedups,
    read_out,
    report,
    seed_band,
    smooth,
    steps_to_reach,
    value_at,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
CURVES = [sys.executable, str(ROOT / "tools/curves.py")]


def write_metrics(run: Path, rows: list[tuple]) -> Path:
    """RUN/metrics.csv as train.py writes it: step, loss, and an evaluation column empty between evaluations."""
    run.mkdir(parents=True)
    with (run / "metrics.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("step", "loss", "fd_fashion"), *rows])
    return run


def test_steps_to_threshold_is_log_linear_between_evaluations():
    points = [(1000, 10.0), (2000, 5.0)]
    assert steps_to_reach(points, math.sqrt(50)) == pytest.approx(1500)  # sqrt(10 * 5): the log midpoint
    assert steps_to_reach(points, 10.0) == 1000 and steps_to_reach(points, 5.0) == pytest.approx(2000)
    assert steps_to_reach(points, 20.0) == 1000  # already below at the first evaluation
    assert steps_to_reach(points, 4.9) is None
    assert steps_to_reach([(0, 100.0), (100, 1.0)], 10.0) == pytest.approx(50)
    # the first crossing counts, not a later one: 1000 + 1000 * ln(10/5) / ln(10/4) = 1756.47
    assert steps_to_reach([(1000, 10.0), (2000, 4.0), (3000, 8.0), (4000, 2.0)], 5.0) == pytest.approx(
        1756.47, abs=0.01
    )
    assert value_at(points, 1500) == pytest.approx(7.0711, abs=1e-4) and value_at(points, 500) is None


def test_smoothing_is_a_centred_geometric_mean_that_keeps_the_ends_and_a_log_linear_trend():
    curve = [(1000 * k, 2.0**e) for k, e in enumerate((0, 2, 4, 1, 3), start=1)]
    # exponents: the ends stay (0 and 3), inside the mean of three: (0+2+4)/3, (2+4+1)/3, (4+1+3)/3
    assert [s for s, _ in smooth(curve, 3)] == [1000, 2000, 3000, 4000, 5000]
    assert [v for _, v in smooth(curve, 3)] == pytest.approx([1.0, 4.0, 2 ** (7 / 3), 2 ** (8 / 3), 8.0])
    # width 5: the middle one averages all five (10/5 = 2), its neighbours still three
    assert [v for _, v in smooth(curve, 5)] == pytest.approx([1.0, 4.0, 4.0, 2 ** (8 / 3), 8.0])
    trend = [(k, 100 * 0.8**k) for k in range(1, 9)]
    assert [v for _, v in smooth(trend, 5)] == pytest.approx([v for _, v in trend])
    assert [v for _, v in smooth(curve, 1)] == pytest.approx([v for _, v in curve])


def test_smoothing_undoes_a_lucky_dip_that_reads_as_an_early_crossing():
    """The baseline halves every 1000 steps but dips to a quarter of its value at step 3000 for one evaluation."""
    base = [(1000 * k, 64 / 2**k * (0.25 if k == 3 else 1.0)) for k in range(1, 9)]
    assert steps_to_reach(base, 2.0) == pytest.approx(3000)  # 64/2^3/4 = 2: reached at the dip, 2000 steps early
    # smoothed over 3, the dip reaches its neighbours only: 4000 is 4·(1/4)^(1/3) = 2.52 > 2, 5000 stays 2
    assert steps_to_reach(smooth(base, 3), 2.0) == pytest.approx(5000)


def test_seed_mean_and_spread_at_the_steps_every_seed_has():
    band = seed_band({"a-s0": [(1, 10.0), (2, 4.0)], "a-s1": [(1, 20.0), (2, 6.0), (3, 1.0)]})
    assert band.steps == [1, 2] and band.mean == [15.0, 5.0] and band.low == [10.0, 4.0] and band.high == [20.0, 6.0]
    with pytest.raises(ValueError, match="share no evaluated step"):
        seed_band({"a-s0": [(1, 10.0)], "a-s1": [(2, 6.0)]})


def test_speedup_is_two_at_every_threshold_when_one_curve_is_the_other_stretched_twofold():
    values = [300 / k**1.5 for k in range(1, 9)]
    base = [(1000 * k, v) for k, v in enumerate(values, start=1)]
    fast = [(500 * k, v) for k, v in enumerate(values, start=1)]
    arms = {"const": {"const-s0": base}, "min_snr": {"min_snr-s0": fast}}
    rungs = ladder(base, [50.0])
    # the baseline at steps 1000, 2000, 4000, 6000 (1/8 ... 3/4 of 8000): 300 / k^1.5, then the extra threshold
    assert [t for t, _ in rungs] == pytest.approx([300, 106.066, 37.5, 20.412, 50.0], abs=1e-3)
    readings = [r for r in read_out(arms, rungs) if r.arm == "min_snr"]
    assert [r.speedup for r in readings] == pytest.approx([2.0] * 5)
    assert [r.seeds["min_snr-s0"][1] for r in readings] == pytest.approx([2.0] * 5)


def test_a_threshold_the_baseline_never_reaches_gives_a_lower_bound(tmp_path):
    """The baseline gets down to 2.0 by its last step, 4000; the arm's seed mean reaches 1.0 at step 2000 (seed s0
    at 1500, the log midpoint of 2.0 and 0.5; s1 at 3000), so the speed-ups are more than 4000/2000, 4000/1500 and
    4000/3000."""
    arms = {
        "const": {"const-s0": [(1000, 8.0), (2000, 4.0), (4000, 2.0)]},
        "min_snr": {
            "min_snr-s0": [(1000, 2.0), (2000, 0.5), (3000, 0.5)],
            "min_snr-s1": [(1000, 4.0), (2000, 1.5), (3000, 1.0)],
        },
    }
    exact, bound = [r for r in read_out(arms, [(4.0, ""), (1.0, "")]) if r.arm == "min_snr"]
    assert (exact.steps, exact.speedup, exact.bound) == (1000, 2.0, False)  # 4.0: baseline 2000, arm mean 3.0 at 1000
    assert bound.bound and bound.steps == pytest.approx(2000) and bound.speedup == pytest.approx(2.0)
    assert bound.seeds == {"min_snr-s0": pytest.approx((1500, 4000 / 1500)), "min_snr-s1": pytest.approx((3000, 4 / 3))}
    text = report(arms, "fd_fashion", tmp_path / "c.png", [1.0], "")
    line = next(line for line in text.splitlines() if line.strip().startswith("1  --threshold"))
    assert line.split()[3:] == ["never", "-", "s0", "never", "(-)"]  # the baseline's own row
    line = text.splitlines()[text.splitlines().index(line) + 1]
    assert line.split() == ["min_snr", "2000", ">2.00x", "s0", "1500", "(>2.67x),", "s1", "3000", "(>1.33x)"]
    assert (tmp_path / "c-speedup.png").stat().st_size > 1000
    # In the plot, thresholds under 2.0 (the baseline's best) are the lower bounds: a dashed line, hollow seed dots.
    ax = plot_speedups(arms, [1.0], "fd_fashion", tmp_path / "s.png").axes[0]
    solid, dashed = ([x for x, y in line.get_xydata() if np.isfinite(y)] for line in ax.get_lines()[1:3])
    assert ax.get_lines()[2].get_linestyle() == "--" and max(dashed) < 2.0 < min(solid)
    dots = [(c.get_offsets()[0][0], len(c.get_facecolors()) == 0) for c in ax.collections if len(c.get_offsets())]
    assert len(dots) == 60 and all(hollow == (x < 2.0) for x, hollow in dots)


def test_a_baseline_with_one_evaluation_reads_out_nothing_and_says_so(tmp_path):
    # a study scores each run as it finishes: after one checkpoint there is no rung between two evaluations
    arms = {"const": {"const-s0": [(500, 342.8)]}}
    text = report(arms, "fd_fashion", tmp_path / "curves.png", [], "")
    assert text.startswith("fd_fashion: no threshold to read yet") and (tmp_path / "curves.png").exists()


def test_metrics_csv_skips_empty_cells(tmp_path):
    run = write_metrics(tmp_path / "x0-const-s0", [(100, 0.5, ""), (200, 0.4, 80.0), (300, 0.3, ""), (400, 0.2, 40.0)])
    assert load([str(run)], "fd_fashion") == {str(run): [(200, 80.0), (400, 40.0)]}
    assert load([f"mine={run / 'metrics.csv'}"], "fd_fashion") == {"mine": [(200, 80.0), (400, 40.0)]}


def test_runs_of_the_same_name_in_different_folders_stay_apart(tmp_path):
    a = write_metrics(tmp_path / "a/x0-const-s0", [(100, 1.0, 50.0)])
    b = write_metrics(tmp_path / "b/x0-const-s0", [(100, 1.0, 70.0)])
    arms = group(load([str(a), str(b)], "fd_fashion"), [])
    assert arms == {
        f"{tmp_path}/a/x0-const": {str(a): [(100, 50.0)]},
        f"{tmp_path}/b/x0-const": {str(b): [(100, 70.0)]},
    }
    both = group(load([f"x0-const-s0={a}", f"x0-const-s1={b}"], "fd_fashion"), [])
    assert list(both) == ["x0-const"] and seed_band(both["x0-const"]).mean == [60.0]
    mine = group(load([str(a), str(b)], "fd_fashion"), [f"const={a},{b}"])
    assert list(mine) == ["const"] and len(mine["const"]) == 2
    with pytest.raises(ValueError, match="given twice"):
        load([f"x0-const-s0={a}", f"x0-const-s0={b}"], "fd_fashion")


def test_curves_csv_rows_group_by_seed_suffix_and_label(tmp_path):
    path = tmp_path / "curves.csv"
    path.write_text("run,step,metric,value\nx-s0,1,fd,9\nx-s1,1,fd,11\nx-s0,1,sfd,3\n")
    assert group(load([str(path)], "fd"), []) == {"x": {"x-s0": [(1, 9.0)], "x-s1": [(1, 11.0)]}}
    assert set(load([str(path), f"old={path}"], "fd")) == {"x-s0", "x-s1", "old/x-s0", "old/x-s1"}


def test_command_draws_and_reads_out_seeds(tmp_path):
    runs = []
    for arm, stretch in (("const", 2), ("min_snr", 1)):
        for seed, scale in ((0, 1.0), (1, 1.2)):
            rows = [(500 * stretch * k, 0.1, 300 * scale / k**1.5) for k in range(1, 9)]
            runs.append(str(write_metrics(tmp_path / f"{arm}-s{seed}", rows)))
    out = tmp_path / "plots/fd.png"
    cmd = [*CURVES, *runs, "--metric", "fd_fashion", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr
    # after the arm: steps, speed-up, "s0", steps, "(speed-up),", "s1", steps, "(speed-up)"
    cells = [line.split(f"{tmp_path}/min_snr ")[1].split() for line in res.stdout.splitlines() if "/min_snr " in line]
    assert [c[1] for c in cells] == ["2.00x"] * 4  # the seed means: one is the other stretched 2x
    for c in cells:  # each seed against the baseline's mean: the better seed (s0) is faster than the worse one
        assert float(c[4].strip("(),x")) >= 2.0 > float(c[7].strip("(),x"))
    assert out.stat().st_size > 1000 and (tmp_path / "plots/fd-speedup.png").stat().st_size > 1000


def test_command_refuses_runs_without_the_metric(tmp_path):
    run = write_metrics(tmp_path / "x0-const-s0", [(100, 0.5, 80.0)])
    res = subprocess.run([*CURVES, str(run)], capture_output=True, text=True, env=ENV)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "no 'fid' column" in res.stderr and "fd_fashion" in res.stderr


def test_command_reads_smoothed_curves_and_refuses_an_even_window(tmp_path):
    runs = [str(write_metrics(tmp_path / f"{arm}-s0", [(k * 100, 0.1, 50 / k) for k in range(1, 6)])) for arm in "ab"]
    flags = ["--metric", "fd_fashion", "--smooth", "3", "--out", str(tmp_path / "c.png")]
    res = subprocess.run([*CURVES, *runs, *flags], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0 and "fd_fashion (smoothed over 3 evaluations): steps to reach" in res.stdout
    res = subprocess.run([*CURVES, *runs, "--smooth", "2"], capture_output=True, text=True, env=ENV)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--smooth 2: an odd number" in res.stderr


def test_help_shows_defaults_and_an_imagenet_example():
    res = subprocess.run([*CURVES, "--help"], capture_output=True, text=True, env={**ENV, "COLUMNS": "200"})
    assert (
        res.returncode == 0 and "(default: fid)" in res.stdout and "(default: results/curves/curves.png)" in res.stdout
    )
    assert "--metric fid" in res.stdout and "ImageNet" in res.stdout


def test_evaluates_every_checkpoint_once_and_plots(tmp_path):
    runs = []
    for weighting in ("const", "min_snr"):
        run = tmp_path / f"x0-{weighting}"
        flags = "--model DiT-T/4 --prediction x0 --max-steps 2 --ckpt-every 1 --keep-checkpoints 0".split()
        flags += "--global-batch-size 4 --num-workers 0".split()
        args = [*flags, "--weighting", weighting, "--results-dir", str(run)]
        res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, env=ENV)
        assert res.returncode == 0, res.stderr[-2000:]
        runs.append(str(run))
    flags = "--num-samples 12 --batch-size 6 --steps 2 --weights raw --device cpu".split()
    cmd = [
        sys.executable,
        str(ROOT / "tools/convergence.py"),
        f"base={runs[0]}",
        runs[1],
        "--out",
        str(tmp_path / "out"),
        *flags,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(tmp_path / "out/curves.csv") as f:
        rows = list(csv.DictReader(f))
    keys = sorted((r["run"], int(r["step"])) for r in rows)
    assert keys == sorted([("base", 1), ("base", 2), (runs[1], 1), (runs[1], 2)])  # a label, else the path as given
    assert {r["metric"] for r in rows} == {"fd_fashion"} and all(float(r["value"]) > 0 for r in rows)
    assert (tmp_path / "out/curves.png").stat().st_size > 1000
    assert "speed-up" in res.stdout and res.stdout.endswith((tmp_path / "out/speedups.txt").read_text())
    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert again.returncode == 0 and ": fd_fashion" not in again.stdout  # nothing new to evaluate
    with open(tmp_path / "out/curves.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    twice = subprocess.run([*cmd[:2], runs[0], f"{runs[0]}/"], capture_output=True, text=True, env=ENV)
    assert twice.returncode == 2 and "given twice" in twice.stderr


def test_a_reproduction_is_printed_beside_the_committed_numbers(tmp_path):
    from studies.common import compare_with_committed
    from tools.convergence import append_row

    for path, value in ((tmp_path / "new.csv", "11.5"), (tmp_path / "old.csv", "11.1384")):
        append_row(path, {"run": "x0-const-s0", "step": 2000, "metric": "fd_fashion", "value": value})
    append_row(tmp_path / "old.csv", {"run": "x0-const-s0", "step": 2500, "metric": "fd_fashion", "value": "9"})
    table = compare_with_committed(tmp_path / "new.csv", tmp_path / "old.csv", "fd_fashion").splitlines()
    assert table[2:] == ["| x0-const-s0 | 2000 | 11.5 | 11.14 |"]  # only what both hold
