"""The config has one definition: Sacred, docs/configuration.md and sweeps read utils.config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from active import ex
from utils.config import (
    NAMED_CONFIGS,
    ConfigError,
    ExperimentConfig,
    check_config,
    choices,
    config_table,
    defaults,
    merged,
    validate,
)

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


def test_sweeps_merge_a_config_as_sacred_does() -> None:
    captured = {}

    @ex.command
    def capture(_config: dict) -> None:
        captured.update(_config)

    named, updates = ["demo", "full_supervision"], {"run": 2, "epochs": 3, "heuristic": "mc"}
    ex.run("capture", named_configs=named, config_updates=updates)
    ex.commands.pop("capture")
    assert merged(named, updates) == captured


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"synthetic": 1}, "synthetic must be true or false"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"patch_size": 64}, "patch_size must be a list of integers"),
        ({"heuristc": "bald"}, "did you mean 'heuristic'?"),
    ],
)
def test_check_config_names_the_key_and_the_fix(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_config(values)


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    check_config({"lr": 1, "image_scale": 1, "heuristic": "bald", "patch_size": [8, 8]})


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"n_data_to_label": 0}, "n_data_to_label must be >= 1, got 0"),
        ({"mc_iters": 0}, "mc_iters must be >= 1, got 0"),
        ({"precision": "fp8"}, "precision must be one of auto, bf16, fp32, got 'fp8'"),
        ({"tag": "a/b"}, "tag must be letters, digits and . , = + - only"),
        ({"strategy": "greedy"}, "unknown strategy 'greedy'; choose one of: topk"),
        ({"reduction": "max"}, "unknown reduction 'max'; choose one of: mean"),
        ({"model_selection": "best"}, "model_selection must be one of val, last, ema"),
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
        ({"augment_on": "gpu"}, "augment_on must be one of auto, loader, device, got 'gpu'"),
        ({"topq_percent": 0.0}, "topq_percent must be in (0, 100], got 0.0"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"region_size": [4, 64]}, "region_size must be [height, width] with both >= 8"),
        ({"num_classes": 256, "dataset": "folder"}, "num_classes must be in [2, 255], got 256"),
        ({"synthetic": True, "dataset": "folder"}, "synthetic generates a GlaS"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"run": -1}, "run must be >= 0, got -1"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"lr_step_size": 0}, "lr_step_size must be >= 1, got 0"),
        ({"base_width": 0}, "base_width must be >= 1, got 0"),
        ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ({"momentum": 0.0}, "nesterov=True needs momentum > 0"),
        ({"mc_iters": 1}, "bald measures disagreement between MC-dropout samples"),
        ({"mc_iters": 1, "heuristic": "mc"}, "variance measures disagreement"),
        (
            {"dropout": 0.0},
            "bald measures disagreement between MC-dropout samples, which is zero with dropout=0",
        ),
        ({"synthetic_counts": [40, 10]}, "synthetic_counts must be [train, testA, testB] with"),
        ({"synthetic_counts": [3, 1, 1]}, "synthetic_counts must be [train, testA, testB] with"),
        ({"synthetic_counts": [8, 0, 0]}, "synthetic_counts must be [train, testA, testB] with"),
        ({"synthetic_size": [96]}, "synthetic_size must be [height, width], each >= 1"),
        ({"patch_size": ["64", "64"]}, "patch_size must be a list of integers"),
    ],
)
def test_validate_refuses_a_bad_value_in_one_line(updates: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(replace(ExperimentConfig(), **updates))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_one_sample_or_no_momentum_is_fine_where_it_means_something() -> None:
    validate(ExperimentConfig(mc_iters=1, heuristic="entropy"))
    validate(ExperimentConfig(mc_iters=1, heuristic="random"))
    validate(ExperimentConfig(dropout=0.0, heuristic="entropy"))
    validate(ExperimentConfig(synthetic_counts=[4, 1, 0]))
    validate(ExperimentConfig(momentum=0.0, nesterov=False))
    validate(ExperimentConfig(device="cuda:1"))


def test_validate_writes_back_the_canonical_heuristic() -> None:
    assert validate(ExperimentConfig(heuristic="mc")).heuristic == "variance"
    assert validate(ExperimentConfig(heuristic="bald")) == ExperimentConfig(heuristic="bald")


def test_every_choice_default_is_one_of_its_choices() -> None:
    for key, value in defaults().items():
        allowed = choices(key)
        assert not allowed or value in allowed, key
