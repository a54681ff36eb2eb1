"""bench/mc_acquisition.py fails a run whose correctness checks miss their targets."""

from __future__ import annotations

import math

from bench.mc_acquisition import missed_targets


def test_a_check_on_the_wrong_side_of_its_target_is_named() -> None:
    at_bounds = {
        "precision_spearman": 0.99,
        "pipeline_max_rel_err": 1e-4,
        "dropout_max_rel_err": 1e-4,
    }
    assert missed_targets(at_bounds) == []
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
