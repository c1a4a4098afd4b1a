"""Named parameters of the loss tables (diffusion/weighting.py, diffusion/timesteps.py).

An entry of a table declares its parameters by name, each a :class:`Param` with its default, what it means and the
check its value must pass. The name is the same everywhere: a ``LossConfig`` key (diffusion/loss.py), a keyword of
``create_diffusion`` and a flag of train.py (``snr_gamma`` is ``--snr-gamma``, made in training/config.py).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One parameter: a number, or a fixed-length tuple of numbers when ``default`` is a tuple."""

    default: float | tuple[float, ...]
    help: str
    valid: Callable[[Any], bool] = lambda value: True
    must_be: str = ""  # what ``valid`` asks for, for the error: "snr_gamma must be > 0, got 0"
    metavar: tuple[str, ...] | None = None  # the flag's value names, for a tuple

    def convert(self, name: str, value: Any) -> float | tuple[float, ...]:
        """``value`` as this parameter's type (floats), checked."""
        if isinstance(self.default, tuple):
            if len(value) != len(self.default):
                raise ValueError(f"{name} takes {len(self.default)} numbers, got {list(value)}")
            converted = tuple(float(v) for v in value)
        else:
            converted = float(value)
        if not self.valid(converted):
            raise ValueError(f"{name} must be {self.must_be}, got {value}")
        return converted


def check_name(kind: str, name: str, valid) -> None:
    """Raise the one-line error for an unknown ``name`` of ``kind``, listing the valid ones."""
    if name not in valid:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")


def declared(table: Mapping[str, Any]) -> dict[str, Param]:
    """Every parameter any entry of ``table`` declares, in table order. A name shared by several entries (γ of the
    three SNR clamps) must be one declaration."""
    out: dict[str, Param] = {}
    for entry in table.values():
        for name, param in entry.params.items():
            if out.setdefault(name, param) is not param:
                raise ValueError(f"parameter {name!r} is declared twice with different definitions")
    return out


def resolve(kind: str, table: Mapping[str, Any], name: str, given: Mapping[str, Any], strict: bool) -> dict:
    """The parameters of ``table[name]``: the values in ``given`` over the declared defaults, converted and checked.

    Every value in ``given`` is checked, also one that another entry takes (a flag is checked whether or not its
    entry is chosen). With ``strict`` such a value is an error; without, it is dropped. A name no entry declares is
    always an error."""
    check_name(kind, name, table)
    every = declared(table)
    for key, value in given.items():
        if key not in every:
            raise ValueError(f"unknown {kind} parameter {key!r}; valid: {', '.join(every) or 'none'}")
        every[key].convert(key, value)
    own = table[name].params
    if strict and (other := [key for key in given if key not in own]):
        raise ValueError(f"{kind} {name!r} takes no parameter {other[0]!r} (it takes: {', '.join(own) or 'none'})")
    return {key: param.convert(key, given.get(key, param.default)) for key, param in own.items()}
