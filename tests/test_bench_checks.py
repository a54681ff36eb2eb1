"""bench/mc_acquisition.py fails a run whose correctness checks miss their targets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.mc_acquisition import missed_targets, print_table


def test_a_check_on_the_wrong_side_of_its_target_is_named() -> None:
    at_bounds = {
        "precision_spearman": 0.99,
        "pipeline_max_rel_err": 1e-4,
        "dropout_max_rel_err": 1e-4,
        "region_max_rel_err": 1e-4,
    }
    assert missed_targets(at_bounds) == []
    assert missed_targets({**at_bounds, "region_max_rel_err": 3e-3}) == [
        "region_max_rel_err=0.003 (target <= 0.0001)"
    ]
    assert missed_targets({**at_bounds, "precision_spearman": 0.98}) == [
        "precision_spearman=0.98 (target >= 0.99)"
    ]
    assert missed_targets({**at_bounds, "dropout_max_rel_err": 0.012}) == [
        "dropout_max_rel_err=0.012 (target <= 0.0001)"
    ]


def test_a_check_that_was_not_measured_passes() -> None:
    # nan: the paths it compares were not run, or (dropout) stacked samples draw other masks.
    assert (
        missed_targets(dict.fromkeys(("precision_spearman", "dropout_max_rel_err"), math.nan)) == []
    )


def _row(scores: list[float]) -> dict:
    """A worker's result as ``run_worker`` returns it, with made-up timings."""
    return {"wall_s": 2.0, "cpu_s": 4.0, "peak_rss_mb": 100.0, "rss_before_mb": 90.0,
            "scores": np.asarray(scores)}  # fmt: skip


def test_the_table_compares_the_workers_each_check_names(capsys: pytest.CaptureFixture) -> None:
    naive = [0.10, 0.20, 0.30, 0.40]
    results = {
        "project": _row(naive),
        "naive": _row(naive),
        "precision_fp32": _row([0.10, 0.20, 0.30, 0.404]),  # 1 % off under dropout
        "precision_bf16": _row([0.10, 0.20, 0.30, 0.4041]),  # not what the dropout check reads
        "pipeline_project": _row([1.0, 2.0, 3.0, 4.0 * (1 + 1e-3)]),
        "pipeline_naive": _row([1.0, 2.0, 3.0, 4.0]),
    }
    missed = print_table(results, n=4, t=2, samples_per_pass=1)
    assert missed == [
        "pipeline_max_rel_err=0.001 (target <= 0.0001)",
        "dropout_max_rel_err=0.01 (target <= 0.0001)",
    ]
    assert "dropout_max_rel_err=1.00e-02" in capsys.readouterr().out
    # Stacked samples draw the masks in another order: the dropout check is not made.
    missed = print_table(results, n=4, t=2, samples_per_pass=10)
    assert missed == ["pipeline_max_rel_err=0.001 (target <= 0.0001)"]
    assert "dropout_max_rel_err=nan" in capsys.readouterr().out
