"""studies/long_study.py's stopping rule: the horizon extends by 5K while an arm's seed mean of FD-fashion moved by
3% or more over the last 5K steps, up to 60K, and the workers follow it to where it settles."""

import numpy as np
import pytest

from data.fashion_mnist import load_arrays
from studies import common, long_study
from studies.long_study import LongStudy, scored_at, stopping_horizon
from tools.convergence import append_row, read_curves

ARMS = ("x0-const", "x0-min_snr")


def rows(values: dict[tuple[str, int], float]) -> list[dict]:
    """curves.csv rows of FD-fashion from {(run, step): value}, with an sFD-fashion row beside each."""
    out = []
    for (run, step), value in values.items():
        out += [{"run": run, "step": step, "metric": m, "value": value} for m in ("fd_fashion", "sfd_fashion")]
    return out


def both_seeds(const: tuple[float, float], min_snr: tuple[float, float], steps=(25_000, 30_000)) -> dict:
    """Seeds 0 and 1 of both arms at ``steps``, each arm's value moving from its first number to its second."""
    values = {}
    for arm, pair in zip(ARMS, (const, min_snr), strict=True):
        for seed in (0, 1):
            values.update({(f"{arm}-s{seed}", step): v for step, v in zip(steps, pair, strict=True)})
    return values


def test_the_horizon_starts_at_30k_and_waits_for_every_score_there():
    assert stopping_horizon([], ARMS, [0, 1]) == 30_000
    values = both_seeds((1.5, 1.49), (1.0, 0.99))
    del values["x0-min_snr-s1", 30_000]
    assert stopping_horizon(rows(values), ARMS, [0, 1]) == 30_000
    assert not scored_at(rows(values), ARMS, [0, 1], 30_000)


@pytest.mark.parametrize(
    "const, min_snr, horizon",
    [
        ((1.50, 1.49), (1.00, 0.98), 30_000),  # 0.7% and 2.0%: both flat
        ((1.50, 1.49), (1.00, 0.971), 30_000),  # 2.9%
        ((1.50, 1.49), (1.00, 0.969), 35_000),  # 3.1%: Min-SNR-5 still moves
        ((1.50, 1.55), (1.00, 0.99), 35_000),  # 3.3% up counts as well as down
    ],
)
def test_a_3_percent_change_of_either_arm_extends_the_horizon_by_5k(const, min_snr, horizon):
    assert stopping_horizon(rows(both_seeds(const, min_snr)), ARMS, [0, 1]) == horizon


def test_the_rule_reads_seed_means_not_single_seeds():
    values = both_seeds((2.0, 2.0), (1.0, 1.0))
    values["x0-const-s0", 30_000], values["x0-const-s1", 30_000] = 2.2, 1.8  # ±10% each, the mean unchanged
    assert stopping_horizon(rows(values), ARMS, [0, 1]) == 30_000


def test_the_horizon_stops_at_60k_however_much_the_curves_still_move():
    steps = range(25_000, 60_001, 5000)
    values = {(f"{arm}-s{seed}", s): 100 / s for arm in ARMS for seed in (0, 1) for s in steps}  # 1/step: never flat
    assert stopping_horizon(rows(values), ARMS, [0, 1]) == 60_000
    assert scored_at(rows(values), ARMS, [0, 1], 60_000)


def test_workers_follow_the_rule_to_where_it_settles_then_run_the_finals(tmp_path, monkeypatch):
    """A stand-in for training and scoring writes every run's score at the horizon it is given (the other worker's
    too). Min-SNR-5 moves 16.7%, then 10%, then 1.1%: the horizons are 30K, 35K and 40K, and the finals run at 40K."""
    min_snr = {25_000: 1.2, 30_000: 1.0, 35_000: 0.9, 40_000: 0.89}
    calls = []

    class StandIn(LongStudy):
        def work(self, names, finals):
            calls.append((self.horizon, finals))
            for arm in ARMS:
                for seed in (0, 1):
                    for step in (self.horizon - 5000, self.horizon):
                        row = {"run": f"{arm}-s{seed}", "step": step, "metric": "fd_fashion"}
                        if (row["run"], step) not in {(r["run"], r["step"]) for r in read_curves(self.curves)}:
                            append_row(self.curves, {**row, "value": 1.5 if arm == "x0-const" else min_snr[step]})

    monkeypatch.setattr(long_study.time, "sleep", lambda s: pytest.fail("waited though every score was in"))
    StandIn(tmp_path, None).work_to_rule(["x0-const-s0", "x0-min_snr-s1"], [0, 1], 1, finals=True)
    assert calls == [(30_000, False), (35_000, False), (40_000, False), (40_000, True)]


def test_stage_2_refuses_to_start_before_stage_1_has_settled(tmp_path):
    with pytest.raises(SystemExit, match="stage 1 has not settled its horizon"):
        LongStudy(tmp_path, None).work_to_rule(["eps-snr-s0"], [0, 1], 2, finals=False)


def finals_rows(horizon: int = 40_000) -> list[dict]:
    """Hand-set --finals scores: three sample seeds of every run, the checkpoints of the last 2500 steps of
    x0-const-s0 only, and the other samplers of seed 0 only."""
    values = {
        # run: FD-fashion at sample seeds 0, 1, 2
        "x0-const-s0": (1.0, 2.0, 3.0),  # sd 1, mean 2
        "x0-const-s1": (2.0, 3.0, 4.0),  # sd 1, mean 3
        "x0-min_snr-s0": (0.5, 1.0, 1.5),  # sd 0.5, mean 1
        "x0-min_snr-s1": (1.5, 2.0, 2.5),  # sd 0.5, mean 2
    }
    out = []
    for run, scores in values.items():
        for suffix, value in zip(("", "@seed1", "@seed2"), scores, strict=True):
            out.append({"run": run, "step": horizon, "metric": f"fd_fashion{suffix}", "value": value})
    for back, value in zip((2500, 2000, 1500, 1000, 500), (3.0, 1.0, 3.0, 1.0, 3.0), strict=True):
        metric = "fd_fashion" if back == 2500 else "fd_fashion@ckpt"  # with 1.0 at the horizon: sd sqrt(6/5)
        out.append({"run": "x0-const-s0", "step": horizon - back, "metric": metric, "value": value})
    for k, value in enumerate((0.2, 0.3, 0.4)):  # real training images: mean 0.3, sd 0.1
        out.append({"run": "real-train", "step": k, "metric": "fd_fashion", "value": value})
    for run, (heun50, ddpm) in {"x0-const-s0": (0.8, 0.6), "x0-min_snr-s0": (0.6, 0.3)}.items():
        out.append({"run": run, "step": horizon, "metric": "fd_fashion@heun50", "value": heun50})
        out.append({"run": run, "step": horizon, "metric": "fd_fashion@ddpm250", "value": ddpm})
    return out


def test_the_finals_read_out_states_both_noise_floors_and_the_gap_against_them():
    floor, samplers = long_study.finals_tables(finals_rows(), ARMS)
    # pooled sample-seed floor: sqrt((1 + 1 + 0.25 + 0.25) / 4) = 0.7906; checkpoints: sqrt(6/5) = 1.0954 (one run)
    assert (
        "pooled: sample seeds 0.791; pooled: checkpoints 1.095; real training images (3 sets): 0.300, sd 0.100" in floor
    )
    # arm means over training and sample seeds: const (2 + 3) / 2 = 2.5, Min-SNR-5 (1 + 2) / 2 = 1.5
    assert "1.500 - 2.500 = -1.000 (1.3x the sample seeds floor, 0.9x the checkpoints floor)" in floor
    assert (
        "| x0-const-s0 | 40000 | 1.000, 2.000, 3.000 | 1.000 | 3.000, 1.000, 3.000, 1.000, 3.000, 1.000 | 1.095 |"
        in floor
    )
    assert "| x0-const-s1 | 40000 | 2.000, 3.000, 4.000 | 1.000 |  |  |" in floor  # no checkpoint scores yet
    # Min-SNR-5 over const at sample seed 0: 0.5 / 1.0, 0.6 / 0.8, 0.3 / 0.6
    assert "| x0-min_snr / x0-const, training-seed means |  | 0.50 | 0.75 | 0.50 |" in samplers
    assert "x0-const-s1" not in samplers and "real-train" not in samplers
    assert long_study.finals_tables([r for r in finals_rows() if "@seed" not in r["metric"]], ARMS) == []


def test_the_finals_score_three_sample_seeds_the_last_checkpoints_and_two_samplers(tmp_path, monkeypatch):
    study, scored = LongStudy(tmp_path, 5000), []

    def fd(run, step, scoring=long_study.HEUN, suffix=""):
        scored.append((step, suffix, scoring.sampler, scoring.steps, scoring.seed))
        append_row(study.curves, {"run": run.name, "step": step, "metric": f"fd_fashion{suffix}", "value": 1.0})

    monkeypatch.setattr(study, "train_to", lambda name, step: tmp_path / name)
    monkeypatch.setattr(study, "denoise", lambda run, every, steps: None)
    monkeypatch.setattr(study, "fd", fd)
    monkeypatch.setattr(study, "finished", lambda name, finals: False)
    study.work(["x0-const-s0"], finals=True)
    assert scored[:5] == [(s, "", "heun", 10, 0) for s in (1000, 2000, 3000, 4000, 5000)]
    assert scored[5:] == [
        *((s, "@ckpt", "heun", 10, 0) for s in (3000, 3500, 4000, 4500)),
        (5000, "@seed1", "heun", 10, 100_000),
        (5000, "@seed2", "heun", 10, 200_000),
        (5000, "@heun50", "heun", 50, 0),
        (5000, "@ddpm250", "ddpm", 250, 0),
    ]


def test_the_metric_floor_scores_disjoint_sets_of_real_training_images_once(tmp_path, monkeypatch):
    seen = []

    def evaluate(ref, sample, metrics, classifier):
        with np.load(sample) as f:
            seen.append((f["arr_0"], f["arr_1"]))
        return {"metrics": {"fd_fashion": 0.25 + len(seen), "sfd_fashion": 4.0}}

    monkeypatch.setattr(common, "evaluate", evaluate)
    study = LongStudy(tmp_path, None)
    study.real_floor(50, 2)
    study.real_floor(50, 2)  # both sets are in: nothing is scored again
    images, labels = load_arrays("train")
    assert len(seen) == 2
    for k, (padded, y) in enumerate(seen):
        assert padded.shape == (50, 32, 32, 1) and padded.dtype == np.uint8
        assert (padded[:, 2:30, 2:30, 0] == images[50 * k : 50 * (k + 1)]).all()  # the k-th 50, disjoint
        assert padded.sum() == images[50 * k : 50 * (k + 1)].astype(np.int64).sum()  # a zero border
        assert (y == labels[50 * k : 50 * (k + 1)]).all()
    fd = [(r["run"], r["step"], r["value"]) for r in read_curves(study.curves) if r["metric"] == "fd_fashion"]
    assert fd == [("real-train", 0, 1.25), ("real-train", 1, 2.25)]
    assert not list(tmp_path.glob("*.npz"))
