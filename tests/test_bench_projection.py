"""The run-time extrapolation of bench/experiment_cycle.py, on hand-computed numbers, and its
profile table on a known operator."""

from __future__ import annotations

import pytest
import torch

from bench.experiment_cycle import fit_training, profiler, project, top_operators

CONFIG = {"n_data_to_label": 1, "balance_al": True, "n_label_start": 4, "al_cycles": 2}


def test_fit_skips_the_warm_up_cycle_and_clamps_a_negative_slope() -> None:
    # Three cycles: the first (warm-up) is left out, the other two give slope 2, intercept 0.
    assert fit_training([4, 6, 8], [30.0, 12.0, 16.0]) == pytest.approx((0.0, 2.0))
    # Two cycles whose times fall: no negative slope, the mean instead.
    assert fit_training([4, 6], [11.0, 10.0]) == pytest.approx((10.5, 0.0))
    # One cycle: proportional to the labelled images.
    assert fit_training([4], [8.0]) == pytest.approx((0.0, 2.0))


def test_projection_and_upper_bound_by_hand() -> None:
    seconds = [
        {"train": 11.0, "test": 2.0, "acquire": 3.0},
        {"train": 10.0, "test": 2.0, "acquire": 0.0},
    ]
    total, upper, plan = project(seconds, [4, 6], CONFIG, pool_size=64)
    assert plan == [4, 6, 8]
    # Test 2 s per cycle; acquisition 3 s / 60 pool images = 0.05 s each, on 60 and 58.
    fixed = 3 * 2.0 + 0.05 * 60 + 0.05 * 58
    assert total == pytest.approx(fixed + 3 * 10.5)
    # Upper bound: measured cycles as measured, then 10 s / 6 images per image.
    assert upper == pytest.approx(fixed + 11.0 + 10.0 + 10.0 / 6 * 8)


def test_the_profile_table_names_the_operators_that_ran() -> None:
    a = torch.ones(64, 64)
    with profiler(enabled=True) as profile:
        for _ in range(3):
            a = torch.mm(a, a).div_(64)
    table = top_operators(profile, rows=3)
    assert "Top 3 by self CPU time" in table
    mm_row = next(line for line in table.splitlines() if line.lstrip().startswith("aten::mm"))
    assert mm_row.split()[-1] == "3"  # the row's call count
    with profiler(enabled=False) as nothing:
        assert nothing is None


def test_overrides_that_would_measure_something_else_are_refused_before_any_cycle(
    capsys: pytest.CaptureFixture,
) -> None:
    from bench.experiment_cycle import main

    for override, message in (
        ("epoch=10", "unknown config key 'epoch'; did you mean 'epochs'?"),
        ("epochs=ten", "epochs must be an integer"),
        ("label_unit=region", "the projection plans whole-image cycles only"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["--set", override])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
