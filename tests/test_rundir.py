"""The run directory's name and the runs it tells apart (training/rundir.py) cover every loss setting: the flags of
each ``LossConfig`` field (diffusion/loss.py) and of the diffusion, so a new field or table parameter is covered
without an edit here."""

import pytest

from diffusion.loss import LOSS_FLAGS
from diffusion.timesteps import DENSITIES, OBJECTIVES
from diffusion.weighting import PREDICTIONS, WEIGHTINGS
from training.checkpoint import DIFFUSION_FLAGS
from training.config import parse_args, parser_defaults
from training.rundir import DISTINCT, default_run_dir

CHOICES = {"prediction": PREDICTIONS, "weighting": WEIGHTINGS, "timestep_sampling": DENSITIES}
CHOICES |= {"timestep_objective": OBJECTIVES, "noise_schedule": ("linear", "cosine", "scaled_linear")}


def another(flag: str, value):
    """A valid value of ``flag`` other than ``value``."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        assert flag in CHOICES, f"say which values the choice {flag} takes"
        return next(v for v in CHOICES[flag] if v != value)
    if isinstance(value, tuple | list):
        return type(value)(v + 1 for v in value)
    return value + 1


@pytest.mark.parametrize("flag", dict.fromkeys((*LOSS_FLAGS, *DIFFUSION_FLAGS)))
def test_every_loss_setting_names_the_run_and_tells_runs_apart(flag):
    defaults = parser_defaults()
    args = parse_args([])
    assert flag in DISTINCT
    setattr(args, flag, another(flag, defaults[flag]))
    assert default_run_dir(args, defaults) != default_run_dir(parse_args([]), defaults)


def test_the_name_spells_out_each_changed_option():
    args = parse_args("--seed 3 --snr-gamma 2 --timestep-sampling laplace --learned-uncertainty".split())
    assert (
        str(default_run_dir(args, parser_defaults()))
        == "results/ViT-T-4-x0-min_snr-snr_gamma2-laplace-learned_uncertainty-s3"
    )
