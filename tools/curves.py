"""Convergence curves from several runs and seeds, and the speed-up read-out of the Min-SNR paper's Fig. 5.

    # Fashion: post-hoc scores of kept checkpoints (tools/convergence.py's curves.csv), const against Min-SNR-5
    python tools/curves.py results/weightings/curves.csv --metric fd_fashion \\
        --only x0-const,x0-min_snr --out results/weightings/fig5.png
    # ImageNet: the FID that train.py --eval-every logs to each run's metrics.csv, 3 seeds per arm
    python tools/curves.py runs/vit-b2-const-s{0,1,2} runs/vit-b2-min_snr-s{0,1,2} --metric fid \\
        --out results/fig5/fid.png

A SOURCE is a run directory (its metrics.csv: a ``step`` column and one column per metric; rows where the metric
is empty are skipped), a metrics.csv, or a curves.csv (columns run, step, metric, value). Each may be written
LABEL=SOURCE. A run is keyed by its label, else by its path as given (a metrics.csv), or by its ``run`` column (a
curves.csv, prefixed LABEL/ when labelled); a key given twice is refused, so runs of the same name in different
folders never merge. Runs group into arms by ``--arm NAME=KEY,KEY`` or else by dropping a trailing -sN seed
(x0-min_snr-s0, x0-min_snr-s1 -> x0-min_snr). The first arm (of --only, else as given) is the baseline.

Each arm's curve is its seed mean at the steps every seed evaluated, drawn with the seeds' min-max band and dots,
log y. Steps to a threshold are read between the two evaluations that bracket it, linear in step and in log value,
for every seed and for the seed mean. Speed-up = the baseline mean's steps over the arm's (per seed: over that
seed's). Where the baseline mean never reaches a threshold, its last evaluated step stands in for its steps, and
the speed-up is a lower bound, printed as ">2.24x" and dashed in the plot. Thresholds: the baseline mean's values
at 1/8, 1/4, 1/2 and 3/4 of its last step (those within its evaluated range), plus every --threshold. Beside OUT
goes OUT-speedup.png: speed-up against threshold, which shows where, and by how much, an arm starts to win.
``--smooth N`` reads every run as the geometric mean over N evaluations centred on each, a check that a reading
does not rest on one checkpoint's luck.
"""

import argparse
import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from training.atomic import atomic_write
from training.cli import OneLineParser, fail

ROOT = Path(__file__).resolve().parents[1]

Curve = list[tuple[int, float]]  # (step, value), sorted by step
FRACTIONS = ("1/8", "1/4", "1/2", "3/4")  # of the baseline's horizon: the default threshold ladder


def arm_of(run: str) -> str:
    """A run's arm: its name without the trailing "-sN" seed."""
    return re.sub(r"-s\d+$", "", run)


# --- reading ---------------------------------------------------------------------------------------------------


def split_label(source: str) -> tuple[str | None, Path]:
    """'LABEL=PATH' -> (LABEL, PATH); a plain path (or one whose '=' sits inside a folder name) -> (None, PATH)."""
    label, sep, path = source.partition("=")
    if sep and label and "/" not in label:
        return label, Path(path)
    return None, Path(source)


def read_metrics_csv(path: Path, metric: str) -> Curve:
    """One run's (step, value) for a column of train.py's metrics.csv, skipping rows where it is empty."""
    with path.open() as f:
        reader = csv.DictReader(f)
        if metric not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no {metric!r} column (it has: {', '.join(reader.fieldnames or [])})")
        points = {int(r["step"]): float(r[metric]) for r in reader if r[metric] not in ("", None)}
    if not points:
        raise ValueError(f"{path} has no {metric!r} values (the column is empty in every row)")
    return sorted(points.items())


def read_curves_csv(path: Path, metric: str) -> dict[str, Curve]:
    """{run: (step, value)} for one metric of a curves.csv (run, step, metric, value)."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    curves: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["metric"] == metric:
            curves.setdefault(r["run"], {})[int(r["step"])] = float(r["value"])
    if not curves:
        have = sorted({r["metric"] for r in rows})
        raise ValueError(f"{path} has no {metric!r} rows (metrics there: {', '.join(have) or 'none'})")
    return {run: sorted(points.items()) for run, points in curves.items()}


def is_curves_csv(path: Path) -> bool:
    with path.open() as f:
        return {"run", "step", "metric", "value"} <= set(next(csv.reader(f), []))


def load(sources: list[str], metric: str) -> dict[str, Curve]:
    """{run key: curve} from every SOURCE (see the module doc); a missing file, metric or a repeated key raises."""
    curves: dict[str, Curve] = {}
    for source in sources:
        label, path = split_label(source)
        csv_path = path / "metrics.csv" if path.is_dir() else path
        if not csv_path.is_file():
            raise ValueError(f"{csv_path} does not exist (a SOURCE is a run directory, a metrics.csv or a curves.csv)")
        if is_curves_csv(csv_path):
            found = {f"{label}/{run}" if label else run: c for run, c in read_curves_csv(csv_path, metric).items()}
        else:
            run = path if path.is_dir() else path.parent
            found = {label or os.path.normpath(run): read_metrics_csv(csv_path, metric)}
        for key in found.keys() & curves.keys():
            raise ValueError(f"run {key!r} is given twice; tell them apart with LABEL=PATH")
        for key, curve in found.items():
            if min(v for _, v in curve) <= 0:
                raise ValueError(f"run {key!r} has a {metric} at or below 0, which a log scale cannot read")
        curves.update(found)
    return curves


def group(curves: dict[str, Curve], arms: list[str]) -> dict[str, dict[str, Curve]]:
    """{arm: {run key: curve}}: runs named by an ``NAME=KEY,KEY`` in ``arms`` go there, the rest by their -sN."""
    named = {}
    for spec in arms:
        name, _, keys = spec.partition("=")
        for key in keys.split(","):
            if key not in curves:
                raise ValueError(f"--arm {spec}: no run {key!r} (runs: {', '.join(curves)})")
            named[key] = name
    grouped: dict[str, dict[str, Curve]] = {}
    for key, curve in curves.items():
        grouped.setdefault(named.get(key, arm_of(key)), {})[key] = curve
    return grouped


def select(arms: dict[str, dict[str, Curve]], only: str | None) -> dict[str, dict[str, Curve]]:
    """The arms named in ``only`` (comma-separated), in that order; all of them when it is None."""
    if only is None:
        return arms
    missing = [a for a in only.split(",") if a not in arms]
    if missing:
        raise ValueError(f"--only: no arm {', '.join(missing)} (arms: {', '.join(arms)})")
    return {a: arms[a] for a in only.split(",")}


# --- arithmetic --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """An arm's seed mean with the seeds' lowest and highest value, at the steps every seed evaluated."""

    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]

    def curve(self) -> Curve:
        return list(zip(self.steps, self.mean, strict=True))


def seed_band(seeds: dict[str, Curve]) -> Band:
    per_seed = [dict(curve) for curve in seeds.values()]
    steps = sorted(set.intersection(*(set(c) for c in per_seed)))
    if not steps:
        raise ValueError(f"the runs {', '.join(seeds)} share no evaluated step, so they have no seed mean")
    values = [[c[s] for c in per_seed] for s in steps]
    return Band(steps, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values])


def smooth(curve: Curve, width: int) -> Curve:
    """Each value replaced by the geometric mean over the ``width`` evaluations centred on it (an odd number); the
    window narrows symmetrically at the ends, so the first and last values stay and a log-linear trend is kept."""
    out = []
    for i, (step, _) in enumerate(curve):
        half = min(width // 2, i, len(curve) - 1 - i)
        window = [v for _, v in curve[i - half : i + half + 1]]
        out.append((step, math.exp(sum(map(math.log, window)) / len(window))))
    return out


def log_lerp(x: float, x0: float, x1: float, y0: float, y1: float) -> float:
    """y at x on the line through (x0, log y0) and (x1, log y1)."""
    return math.exp(math.log(y0) + (x - x0) / (x1 - x0) * (math.log(y1) - math.log(y0)))


def value_at(curve: Curve, step: float) -> float | None:
    """The curve's value at ``step``, log-linear between the evaluations around it; None outside them."""
    for (s0, v0), (s1, v1) in zip(curve, curve[1:], strict=False):
        if s0 <= step <= s1:
            return log_lerp(step, s0, s1, v0, v1)
    return curve[0][1] if len(curve) == 1 and curve[0][0] == step else None


def steps_to_reach(curve: Curve, threshold: float) -> float | None:
    """The step where the curve first comes down to ``threshold``: between the last evaluation above it and the
    first at or below it, linear in step and in log value. The first step if it starts below; None if never."""
    if curve[0][1] <= threshold:
        return float(curve[0][0])
    for (s0, v0), (s1, v1) in zip(curve, curve[1:], strict=False):
        if v1 <= threshold:
            return s0 + (s1 - s0) * math.log(v0 / threshold) / math.log(v0 / v1)
    return None


def ladder(baseline: Curve, extra: list[float]) -> list[tuple[float, str]]:
    """(threshold, where it comes from): the baseline at each FRACTION of its last step, then ``extra``."""
    rungs = []
    for fraction in FRACTIONS:
        num, den = map(int, fraction.split("/"))
        step = baseline[-1][0] * num / den
        value = value_at(baseline, step)
        if value is not None:
            rungs.append((value, f"{fraction}: step {step:g}"))
    return rungs + [(t, "--threshold") for t in extra]


@dataclass(frozen=True)
class Reading:
    """One arm at one threshold: steps to reach it (mean curve and each seed) and the speed-ups over the baseline."""

    threshold: float
    source: str
    arm: str
    steps: float | None
    speedup: float | None
    seeds: dict[str, tuple[float | None, float | None]]  # run key -> (steps, speed-up)
    bound: bool  # the baseline mean never reached the threshold: its last step stands in, speed-ups are lower bounds


def ratio(base: float, steps: float | None) -> float | None:
    return base / steps if steps else None


def read_out(arms: dict[str, dict[str, Curve]], thresholds: list[tuple[float, str]]) -> list[Reading]:
    """Every arm at every threshold; the first arm's seed mean is the baseline."""
    bands = {arm: seed_band(seeds).curve() for arm, seeds in arms.items()}
    baseline = next(iter(bands.values()))
    readings = []
    for threshold, source in thresholds:
        reached_by_base = steps_to_reach(baseline, threshold)
        bound = reached_by_base is None
        base = float(baseline[-1][0]) if bound else reached_by_base
        for arm, seeds in arms.items():
            steps = steps_to_reach(bands[arm], threshold)
            reached = {key: steps_to_reach(curve, threshold) for key, curve in seeds.items()}
            per_seed = {key: (s, ratio(base, s)) for key, s in reached.items()}
            readings.append(Reading(threshold, source, arm, steps, ratio(base, steps), per_seed, bound))
    return readings


# --- output ------------------------------------------------------------------------------------------------------


def seed_name(key: str, arm: str) -> str:
    """'x0-const-s1' in arm 'x0-const' -> 's1'; a key that does not extend its arm's name stays whole."""
    return key[len(arm) :].lstrip("-") if key.startswith(arm) and key != arm else key


def table(readings: list[Reading], metric: str) -> str:
    def steps(s: float | None) -> str:
        return "never" if s is None else f"{s:.0f}"

    def speed(r: float | None, bound: bool) -> str:
        return "-" if r is None else f"{'>' if bound else ''}{r:.2f}x"

    if not readings:
        return f"{metric}: no threshold to read yet (the baseline needs two evaluations, or pass --threshold)"
    width = max(len(r.arm) for r in readings)
    lines = [
        f"{metric}: steps to reach each threshold (log-linear between evaluations); speed-up = the baseline "
        f"mean's steps / the arm's",
        f"{'threshold':>9s}  {'baseline at':20s} {'arm':{width}s} {'steps':>7s} {'speed-up':>8s}  "
        f"per seed: steps (speed-up)",
    ]
    previous = None
    for r in readings:
        head = ("", "") if r.threshold == previous else (f"{r.threshold:.4g}", r.source)
        previous = r.threshold
        seeds = ", ".join(f"{seed_name(k, r.arm)} {steps(s)} ({speed(x, r.bound)})" for k, (s, x) in r.seeds.items())
        lines.append(
            f"{head[0]:>9s}  {head[1]:20s} {r.arm:{width}s} {steps(r.steps):>7s} {speed(r.speedup, r.bound):>8s}  "
            f"{seeds}"
        )
    return "\n".join(lines)


def save(fig, path: Path) -> None:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_curves(arms: dict[str, dict[str, Curve]], metric: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for i, (arm, seeds) in enumerate(arms.items()):
        band, color = seed_band(seeds), f"C{i}"
        label = f"{arm} ({len(seeds)} seeds)" if len(seeds) > 1 else f"{arm} (1 seed)"
        ax.plot(band.steps, band.mean, marker="o", markersize=3, color=color, label=label)
        if len(seeds) > 1:
            ax.fill_between(band.steps, band.low, band.high, color=color, alpha=0.2, linewidth=0)
            for curve in seeds.values():
                ax.scatter(*zip(*curve, strict=True), s=5, color=color, alpha=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("training steps")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric}: seed mean (band: min-max over seeds; dots: seeds)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def plot_speedups(arms: dict[str, dict[str, Curve]], rungs: list[float], metric: str, path: Path):
    """Speed-up over the baseline against threshold, on 60 thresholds from the baseline mean's highest value to
    the lowest of any arm's mean; dashed, and its seeds' dots hollow, where it is a lower bound (the baseline never
    got there). Returns the (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    top = max(seed_band(next(iter(arms.values()))).mean)
    bottom = min(min(seed_band(seeds).mean) for seeds in arms.values())
    grid = [(top * (bottom / top) ** (i / 59), "") for i in range(60)]
    readings = read_out(arms, grid)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.axhline(1.0, color="C0", linewidth=1, label=f"{next(iter(arms))} (baseline)")
    for i, arm in enumerate(list(arms)[1:], start=1):
        mine = [r for r in readings if r.arm == arm]
        thresholds = [r.threshold for r in mine]
        exact = [math.nan if r.speedup is None or r.bound else r.speedup for r in mine]
        at_least = [r.speedup if r.speedup is not None and r.bound else math.nan for r in mine]
        ax.plot(thresholds, exact, color=f"C{i}", label=f"{arm}, seed mean")
        if not all(map(math.isnan, at_least)):
            ax.plot(thresholds, at_least, color=f"C{i}", linestyle="--", label=f"{arm}, at least (baseline never)")
        for r in mine:
            seeds = [x for _, x in r.seeds.values() if x is not None]
            face = "none" if r.bound else f"C{i}"  # hollow: a lower bound, like the dashed line
            ax.scatter([r.threshold] * len(seeds), seeds, s=6, edgecolors=f"C{i}", facecolors=face, linewidths=0.6)
    for rung in rungs:
        ax.axvline(rung, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2, 5)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.invert_xaxis()
    ax.set_xlabel(f"threshold {metric}\n(stricter to the right; dotted: the printed ladder)")
    ax.set_ylabel("speed-up over the baseline (steps ratio)")
    ax.set_title("Where and by how much an arm starts to win (dots: seeds; hollow: at least)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
    return fig


def report(
    arms: dict[str, dict[str, Curve]], metric: str, out: Path, thresholds: list[float], title: str, width: int = 1
) -> str:
    """Draw OUT and OUT-speedup.png and return the printed read-out, of every run smoothed over ``width``."""
    if width > 1:
        arms = {arm: {key: smooth(curve, width) for key, curve in seeds.items()} for arm, seeds in arms.items()}
        metric = f"{metric} (smoothed over {width} evaluations)"
    out.parent.mkdir(parents=True, exist_ok=True)
    rungs = ladder(seed_band(next(iter(arms.values()))).curve(), thresholds)
    plot_curves(arms, metric, out, title)
    plot_speedups(arms, [t for t, _ in rungs], metric, out.with_name(f"{out.stem}-speedup.png"))
    return table(read_out(arms, rungs), metric)


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module doc as written, and every option's default."""


def main() -> None:
    p = OneLineParser(prog="curves.py", description=__doc__, formatter_class=Formatter)
    p.add_argument("sources", nargs="+", metavar="[LABEL=]SOURCE", help="run directories, metrics.csv or curves.csv")
    p.add_argument("--metric", default="fid", help="a metrics.csv column or a curves.csv metric, e.g. fd_fashion")
    p.add_argument(
        "--arm", action="append", default=[], metavar="NAME=KEY,KEY", help="group these runs into an arm (repeatable)"
    )
    p.add_argument("--only", help="comma-separated arms to draw, in order; the first is the baseline; None: all")
    p.add_argument(
        "--threshold", type=float, action="append", default=[], help="a threshold to add to the ladder (repeatable)"
    )
    p.add_argument(
        "--smooth",
        type=int,
        default=1,
        metavar="N",
        help="read (and draw) each run as the geometric mean over N evaluations centred on each (odd; 1: as measured)",
    )
    p.add_argument("--out", type=Path, default=Path("results/curves/curves.png"), help="the curves plot")
    p.add_argument("--title", default="", help="the curves plot's title")
    args = p.parse_args()
    if args.smooth < 1 or args.smooth % 2 == 0:
        p.error(f"--smooth {args.smooth}: an odd number of evaluations, 1 or more")
    try:
        arms = select(group(load(args.sources, args.metric), args.arm), args.only)
        print(report(arms, args.metric, args.out, args.threshold, args.title, args.smooth))
    except ValueError as err:
        fail(p.prog, err)


if __name__ == "__main__":
    main()
