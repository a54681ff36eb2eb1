"""The config has one definition: Sacred, docs/configuration.md and sweeps read utils.config."""

from __future__ import annotations

from pathlib import Path

import pytest

from active import ex
from utils.config import NAMED_CONFIGS, check_config, config_table, defaults

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_table_is_the_generated_one() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text()
    assert config_table() in readme, (
        "docs/configuration.md drifted from utils/config.py; paste the output of "
        "`python -m utils.config` into it"
    )


def test_sacred_sees_exactly_the_dataclass_defaults() -> None:
    captured = {}

    @ex.command
    def capture(_config: dict) -> None:
        captured.update(_config)

    ex.run("capture", config_updates={"run": 3})
    assert captured == {**defaults(), "run": 3, "seed": 3}  # seed follows run
    captured.clear()
    ex.run("capture", named_configs=["demo"])
    assert captured == {**defaults(), **NAMED_CONFIGS["demo"]}
    ex.commands.pop("capture")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"synthetic": 1}, "synthetic must be true or false"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"patch_size": 64}, "patch_size must be a list"),
        ({"heuristc": "bald"}, "did you mean 'heuristic'?"),
    ],
)
def test_check_config_names_the_key_and_the_fix(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_config(values)


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    check_config({"lr": 1, "image_scale": 1, "heuristic": "bald", "patch_size": [8, 8]})
