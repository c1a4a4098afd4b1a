"""The per-step seed of training (training/step.py) is SHA-256 of "seed:step:rank", pinned by values from coreutils."""

import pytest

from training.step import step_seed

# (seed, step, rank) -> the first 16 hex digits of `echo -n "seed:step:rank" | sha256sum`, and the seed they give.
PINNED = [
    ((0, 0, -1), "dead8dcb5085b83b", 4303336026011446750),
    ((0, 1, -1), "5d4cd4bef8e3f2fe", 9147624450635877469),
    ((0, 1, 0), "1dec49fcb20b2578", 8657338722054433821),
    ((12345, 999999, 7), "409bbc0ba5238cdd", 6740801934040275776),
]


@pytest.mark.parametrize("args,hex_digits,value", PINNED)
def test_step_seed_is_sha256_of_the_text(args, hex_digits, value):
    assert int.from_bytes(bytes.fromhex(hex_digits), "little") & (2**63 - 1) == value
    assert step_seed(*args) == value
