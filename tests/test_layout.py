"""The package's shape: one installable package without import-path hacks, imports that go one way, and
docs/layout.md naming a room for every file."""

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked() -> list[str]:
    """The repository's files as git sees them (staged ones included)."""
    try:
        res = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [f for f in res.stdout.splitlines() if (ROOT / f).exists()]


def rooms() -> list[str]:
    """The paths in the first column of docs/layout.md's table."""
    cells = re.findall(r"^\| ([^|]+) \|", (ROOT / "docs/layout.md").read_text(), re.M)
    return [path for cell in cells for path in re.findall(r"`([^`]+)`", cell)]


def imports(path: Path) -> set[str]:
    """The top-level names a Python file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_file_has_a_room_in_the_layout_and_every_command_and_driver_its_own_row():
    listed = rooms()
    homeless = [f for f in tracked() if not any(f == r or (r.endswith("/") and f.startswith(r)) for r in listed)]
    assert not homeless, f"docs/layout.md names no room for {homeless}"
    scripts = [f for f in tracked() if f.startswith(("tools/", "studies/")) and not f.endswith("__init__.py")]
    unnamed = [f for f in scripts if f not in listed]
    assert not unnamed, f"docs/layout.md has no row for {unnamed}"


def test_pyproject_installs_every_package_and_root_script():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")
    assert sorted(config["packages"]) == packages
    assert sorted(config["py-modules"]) == sorted(p.stem for p in ROOT.glob("*.py"))


def test_no_script_shadows_a_package_it_would_import():
    """`python bench/X.py` puts bench/ first on the import path, so a bench/data.py would hide the data package."""
    top = {p.parent.name for p in ROOT.glob("*/__init__.py")} | {p.stem for p in ROOT.glob("*.py")}
    shadows = [f for f in tracked() if f.count("/") == 1 and f.endswith(".py") and Path(f).stem in top]
    assert not shadows, f"{shadows} would shadow a package or root module when a script beside them runs"


def test_nothing_edits_the_import_path():
    edit = re.compile(r"sys\.path(\.(insert|append|extend)|\s*(\+=|\[[^]]*\]\s*=))")
    allowed = {"tests/slow_writes.py"}  # it runs a script as `python SCRIPT` would, with the script's folder first
    hacks = [f for f in tracked() if f.endswith(".py") and f not in allowed and edit.search((ROOT / f).read_text())]
    assert not hacks, f"sys.path edits in {hacks}: the editable install (make setup) makes every package importable"


def test_imports_go_one_way():
    """library <- root scripts <- tools/ <- studies/ and bench/; nothing but tests imports tests."""
    library = {"data", "diffusion", "evaluation", "models", "sampling", "training"}
    scripts = {p.stem for p in ROOT.glob("*.py")}
    above = {  # what each room may not import: the rooms above it
        "library": scripts | {"tools", "studies", "bench", "tests"},
        "script": {"tools", "studies", "bench", "tests"},
        "tools": {"studies", "bench", "tests"},
        "studies": {"tests"},
        "bench": {"tests"},
    }
    for f in tracked():
        if not f.endswith(".py") or f.startswith("tests/"):
            continue
        top = f.split("/")[0]
        room = "library" if top in library else "script" if "/" not in f else top
        wrong = imports(ROOT / f) & above[room]
        assert not wrong, f"{f} ({room}) imports {sorted(wrong)}, which sit above it"
