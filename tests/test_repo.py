"""The repository's promises: one place for pins, CI runs the README's test command."""

import re
from pathlib import Path

import torch

from models import ALL_MODELS, forward_macs

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_every_dependency_is_pinned_once_with_the_local_torch_wheels():
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line) for line in lines), lines
    p = pins()
    assert len(p) == len(lines)
    assert p["torch"] == "2.14.1" and p["torchvision"] == "0.29.1"
    needed = "timm einops scipy torch-fidelity diffusers accelerate tqdm tensorboard matplotlib pytest ruff"
    assert set(needed.split()) <= set(p)


def test_environment_yml_and_pyproject_use_the_same_pins():
    env = (ROOT / "environment.yml").read_text()
    assert "-r requirements.txt" in env and "==" not in env
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dependencies = { file = ["requirements.txt"] }' in pyproject


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands[:2] == ["make demo", "make test"]
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith(("#", "set "))]
    assert ci[-1] == "make test"


def test_readme_model_table_lists_every_registry_name_with_its_counts():
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Za-z]+-[A-Z]+/\d)` \| ([\d,]+ \| [\d.]+) \|$", readme, re.M))
    assert list(rows) == list(ALL_MODELS)
    for name, build in ALL_MODELS.items():
        with torch.device("meta"):
            m = build(input_size=32, in_channels=4, num_classes=1000, learn_sigma=name.startswith("DiT"))
        assert rows[name] == f"{sum(p.numel() for p in m.parameters()):,} | {forward_macs(m) / 1e9:.2f}"
