"""Shared fixtures: one small synthetic GlaS with splits, and a tiny experiment config."""

from __future__ import annotations

import fcntl
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from data.create_splits import write_splits
from data.synthetic import generate_synthetic_glas

SYNTHETIC_COUNTS = {"n_train": 12, "n_test_a": 3, "n_test_b": 2}


def made_once(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """``factory``'s folder ``name``, filled by ``make`` once per test session: under
    pytest-xdist, by the first worker to ask, while the others wait for it."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' basetemps share this parent
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def _make_synthetic(root: Path) -> None:
    generate_synthetic_glas(root / "GlaS", height=48, width=64, seed=1, **SYNTHETIC_COUNTS)
    write_splits(root / "GlaS", root / "splits", seed=0)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic GlaS (``GlaS/``) and its splits (``splits/``); copy before editing."""
    return made_once(tmp_path_factory, "synthetic", _make_synthetic)


@pytest.fixture(scope="session")
def clean_sweep(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted sweep: 2 heuristics x 2 runs of the demo, 2 at a time. The tests in
    ``test_sweep.py`` may rewrite its report; the others only read its runs."""
    from tests.test_sweep import demo_tokens, run_sweep, sweep_command

    def make(results: Path) -> None:
        done = run_sweep(sweep_command(demo_tokens(synthetic_root, results)))
        assert done.returncode == 0, done.stderr

    return made_once(tmp_path_factory, "clean_sweep", make)


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


def xdist_group(item: pytest.Item) -> str | None:
    """Under pytest-xdist (`make test`, `--dist loadgroup`), the tests that must not run beside
    each other go to one worker: those that submit to the one-node SLURM cluster (a second
    array would queue behind the first and upset the requeue's timing), and those that may
    rewrite the shared clean sweep's report."""
    if item.get_closest_marker("slurm"):
        return "slurm"
    if item.path.name == "test_sweep.py" and "clean_sweep" in getattr(item, "fixturenames", ()):
        return "clean_sweep"
    return None


# First among the hooks: xdist names each worker's tests by their group in a hook of its own.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        names = set(getattr(function, "__code__", compile("", "", "exec")).co_names)
        fixtures = set(getattr(item, "fixturenames", ()))
        if (names | fixtures) & FULL_RUN_NAMES:
            item.add_marker(pytest.mark.slow)
        group = xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    # The longest first, so that parallel workers do not end waiting on one of them.
    items.sort(
        key=lambda item: (item.get_closest_marker("slurm") is None, "slow" not in item.keywords)
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    # xdist groups a worker's tests by a suffix it adds to their ids; when it cannot (pytest 9.2,
    # pytest-xdist#1386), grouped tests are silently spread over the workers instead.
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]  # fmt: skip
    if lost:
        warnings.warn(
            f"pytest-xdist did not group {lost[0]} (and {len(lost) - 1} more) under --dist "
            f"loadgroup with pytest {pytest.__version__}, so they may run side by side; "
            "install requirements-dev.txt",
            pytest.PytestWarning,
            stacklevel=1,
        )
