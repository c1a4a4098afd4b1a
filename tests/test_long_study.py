"""studies/long_study.py's stopping rule: the horizon extends by 5K while an arm's seed mean of FD-fashion moved by
3% or more over the last 5K steps, up to 60K, and the workers follow it to where it settles."""

import pytest

from studies import long_study
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
