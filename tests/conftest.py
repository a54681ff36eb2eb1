"""Shared fixtures: one small synthetic GlaS with splits, and a tiny experiment config."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from data.create_splits import write_splits
from data.synthetic import generate_synthetic_glas

SYNTHETIC_COUNTS = {"n_train": 12, "n_test_a": 3, "n_test_b": 2}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic GlaS (``GlaS/``) and its splits (``splits/``); copy before editing."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_glas(root / "GlaS", height=48, width=64, seed=1, **SYNTHETIC_COUNTS)
    write_splits(root / "GlaS", root / "splits", seed=0)
    return root


@pytest.fixture
def glas_copy(synthetic_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the synthetic data and splits that a test may break."""
    shutil.copytree(synthetic_root / "GlaS", tmp_path / "GlaS")
    shutil.copytree(synthetic_root / "splits", tmp_path / "splits")
    return tmp_path / "GlaS", tmp_path / "splits"


def tiny_config(data_path: Path, splits_path: Path, results_dir: Path, **updates: Any) -> dict:
    """Config updates for a run of a few seconds on the synthetic data."""
    config = {
        "data_path": str(data_path),
        "splits_path": str(splits_path),
        "results_dir": str(results_dir),
        "patch_size": [32, 32],
        "batch_size": 4,
        "base_width": 4,
        "epochs": 2,
        "al_cycles": 2,
        "mc_iters": 2,
        "mc_samples_per_pass": 2,
        "lr_step_size": 2,
        "progress": False,
    }
    config.update(updates)
    return config


@pytest.fixture(autouse=True, scope="session")
def _sacred_without_output_capture() -> None:
    # Sacred's default fd-level capture would hide prints from pytest's capsys.
    from sacred import SETTINGS

    SETTINGS.CAPTURE_MODE = "no"


def spy_on_coreset(
    monkeypatch: pytest.MonkeyPatch, features: str, mc_scoring: str
) -> tuple[list[tuple[Any, int]], list[Any]]:
    """Record what ``coreset`` is given: every call of ``utils.loop.units.<features>`` as
    (model, number of items) and every ``Selection``; an MC pass (``<mc_scoring>``) fails."""
    import utils.loop.units as acquisition
    from heuristics.strategies import STRATEGIES, Strategy, coreset

    calls: list[tuple[Any, int]] = []
    selections: list[Any] = []
    real = getattr(acquisition, features)

    def recording_features(model, *args):
        calls.append((model, len(args[-3])))  # the items come before device and precision
        return real(model, *args)

    def no_mc_pass(*args, **kwargs):
        raise AssertionError("coreset needs no MC pass over the pool")

    def recording_coreset(selection):
        selections.append(selection)
        return coreset(selection)

    monkeypatch.setattr(acquisition, features, recording_features)
    monkeypatch.setattr(acquisition, mc_scoring, no_mc_pass)
    monkeypatch.setitem(
        STRATEGIES,
        "coreset",
        Strategy(recording_coreset, False, needs_features=True, needs_labelled_features=True),
    )
    return calls, selections


# A test that names one of these runs whole active-learning runs or sweeps (seconds to minutes
# each): it is marked `slow`, and `make test-fast` leaves it out. `run` also catches
# `subprocess.run`, which here always starts active.py, sweep.py or a converter.
FULL_RUN_NAMES = frozenset(
    {
        "ex",
        "run",
        "run_tiny",
        "run_active_learning",
        "cli_args",
        "_cli",
        "run_sweep",
        "clean_sweep",
        "suggest",
    }
)


# Under pytest-xdist (`make test`), the tests that share one of these module-scoped results go
# to one worker (`--dist loadgroup`), so that the result is made once, not once per worker.
SHARED_RESULTS = {"clean_sweep": "clean_sweep", "local_2x2": "slurm", "local_longer": "slurm"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        names = set(getattr(function, "__code__", compile("", "", "exec")).co_names)
        fixtures = set(getattr(item, "fixturenames", ()))
        if (names | fixtures) & FULL_RUN_NAMES:
            item.add_marker(pytest.mark.slow)
        for fixture in sorted(fixtures & SHARED_RESULTS.keys()):
            item.add_marker(pytest.mark.xdist_group(SHARED_RESULTS[fixture]))
    # The longest first, so that parallel workers do not end waiting on one of them.
    items.sort(
        key=lambda item: (item.get_closest_marker("slurm") is None, "slow" not in item.keywords)
    )
