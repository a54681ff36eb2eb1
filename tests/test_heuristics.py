"""Heuristics: golden values on tiny tensors, equality with baal, acquisition rules, and the loop
scoring the pool with the MC-dropout copy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from baal.active.heuristics import BALD, Entropy, Variance
from baal.bayesian.dropout import Dropout2d

import utils.loop.run
from active import ex
from heuristics import ALIASES, PIXEL_MAPS, resolve_heuristic
from heuristics.reductions import ReductionSettings, mean_reduction
from heuristics.strategies import select_for_labelling
from heuristics.uncertainty import border_distance_weight
from tests.conftest import tiny_config


def image_score(name: str, probs: torch.Tensor) -> torch.Tensor:
    """The original study's image score: the heuristic's pixel map, mean-reduced. [N]"""
    pixel_map = PIXEL_MAPS[name](probs)
    return mean_reduction(pixel_map, probs, ReductionSettings())


def one_hot_samples(*classes: int, n_classes: int = 2) -> torch.Tensor:
    """``[1, C, 1, 1, T]`` probabilities: sample t is a one-hot on ``classes[t]``."""
    probs = torch.zeros(1, n_classes, 1, 1, len(classes))
    for t, c in enumerate(classes):
        probs[0, c, 0, 0, t] = 1.0
    return probs


def random_probs(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return logits.softmax(1)


def test_bald_is_zero_when_all_samples_agree() -> None:
    probs = torch.tensor([0.3, 0.7]).view(1, 2, 1, 1, 1).expand(1, 2, 1, 1, 5)
    assert image_score("bald", probs).item() == pytest.approx(0.0, abs=1e-7)


def test_bald_is_ln2_for_two_opposite_one_hot_samples() -> None:
    assert image_score("bald", one_hot_samples(0, 1)).item() == pytest.approx(math.log(2))


def test_entropy_golden_values_and_maximum_at_uniform() -> None:
    uniform = torch.full((1, 4, 1, 1, 3), 0.25)
    assert image_score("entropy", uniform).item() == pytest.approx(math.log(4))
    # Opposite one-hots average to uniform: maximal entropy, as for BALD above.
    assert image_score("entropy", one_hot_samples(0, 1)).item() == pytest.approx(math.log(2))
    others = random_probs((64, 4, 1, 1, 3))
    assert (image_score("entropy", others) < math.log(4)).all()


def test_variance_golden_value() -> None:
    # Class-1 probabilities 0.9, 0.5, 0.7: mean 0.7 predicts class 1; population variance 0.08/3.
    probs = torch.tensor([[0.1, 0.5, 0.3], [0.9, 0.5, 0.7]]).view(1, 2, 1, 1, 3)
    assert image_score("variance", probs).item() == pytest.approx(0.08 / 3, rel=1e-5)


def test_variance_takes_the_class_the_mean_predicts_among_three() -> None:
    # Mean (0.2, 0.5, 0.3) predicts class 1, whose samples 0.7, 0.3, 0.5 have population variance
    # 0.08/3; classes 0 (0.1, 0.3, 0.2) and 2 (0.2, 0.4, 0.3) have 0.02/3, and the mean over
    # the classes would be 0.04/3.
    probs = torch.tensor([[0.1, 0.3, 0.2], [0.7, 0.3, 0.5], [0.2, 0.4, 0.3]]).view(1, 3, 1, 1, 3)
    assert image_score("variance", probs).item() == pytest.approx(0.08 / 3, rel=1e-5)


def test_every_pixel_map_has_one_value_per_pixel() -> None:
    probs = random_probs((3, 2, 5, 6, 4))
    for name, pixel_map in PIXEL_MAPS.items():
        assert pixel_map(probs).shape == (3, 5, 6), name


def test_variance_matches_baal_with_two_classes() -> None:
    # With two classes the variance of the predicted class is that of either class, which is
    # baal's per-pixel variance averaged over the classes.
    probs = random_probs((4, 2, 7, 5, 6), seed=11)
    baal_variance = Variance(reduction="mean").get_uncertainties(probs.numpy().astype(np.float64))
    np.testing.assert_allclose(image_score("variance", probs).numpy(), baal_variance, rtol=1e-4)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_bald_and_entropy_match_baal(n_classes: int) -> None:
    probs = random_probs((4, n_classes, 7, 5, 6), seed=n_classes)
    baal_bald = BALD(reduction="mean").get_uncertainties(probs.numpy().astype(np.float64))
    baal_entropy = Entropy(reduction="mean").get_uncertainties(probs.numpy().astype(np.float64))
    np.testing.assert_allclose(image_score("bald", probs).numpy(), baal_bald, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(image_score("entropy", probs).numpy(), baal_entropy, rtol=1e-4)


def test_border_distance_weight_is_two_sided_and_normalised() -> None:
    foreground = np.zeros((1, 7), dtype=bool)
    foreground[0, 3:] = True  # border between columns 2 and 3
    weight = border_distance_weight(foreground)
    # Distances 3,2,1 | 1,2,3,4 on either side, divided by the maximum 4.
    np.testing.assert_allclose(weight[0], [0.75, 0.5, 0.25, 0.25, 0.5, 0.75, 1.0])
    assert border_distance_weight(np.ones((3, 3), dtype=bool)).tolist() == [[1.0] * 3] * 3


def test_variance_edt_discounts_border_uncertainty() -> None:
    # Same MC variance everywhere; the mean prediction has a border down the middle.
    high = torch.tensor([[0.2, 0.4], [0.8, 0.6]])  # class-1 probs per sample: 0.8, 0.6 (mean 0.7)
    probs = torch.empty(1, 2, 1, 8, 2)
    probs[0, :, 0, :4, :] = high.flip(0)[:, None, :]  # left: background predicted
    probs[0, :, 0, 4:, :] = high[:, None, :]  # right: gland predicted
    variance = PIXEL_MAPS["variance"](probs)[0, 0]
    weighted = PIXEL_MAPS["variance_edt"](probs)[0, 0]
    torch.testing.assert_close(variance, torch.full((8,), 0.01))
    assert weighted[3] < weighted[0] and weighted[4] < weighted[7]
    assert weighted.max().item() == pytest.approx(0.01)


def test_aliases_and_unknown_names() -> None:
    assert {a: resolve_heuristic(a) for a in ALIASES} == {
        "mc": "variance",
        "max": "entropy",
        "rand": "random",
    }
    with pytest.raises(ValueError, match="bald.*variance_edt"):
        resolve_heuristic("bal")


def test_selection_unbalanced_takes_top_scores() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    assert select_for_labelling(scores, np.zeros(4), 2, balance=False).tolist() == [1, 3]


def test_selection_balanced_takes_best_of_each_grade() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2])
    grades = np.array([1, 0, 1, 0, 1])
    assert select_for_labelling(scores, grades, 1, balance=True).tolist() == [1, 2]


def test_selection_fills_from_other_grade_when_one_runs_out() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.8])
    grades = np.array([1, 0, 0, 0, 0])  # a single malignant image left
    chosen = select_for_labelling(scores, grades, 2, balance=True)
    assert sorted(chosen.tolist()) == [0, 1, 3, 4]


def test_selection_takes_whole_pool_when_smaller_than_request() -> None:
    chosen = select_for_labelling(np.array([0.3, 0.6]), np.array([0, 0]), 1, balance=True)
    assert sorted(chosen.tolist()) == [0, 1]
    with pytest.raises(ValueError, match="n_data_to_label"):
        select_for_labelling(np.array([0.3]), np.array([0]), 0, balance=False)


@pytest.mark.parametrize("heuristic", ["bald", "variance"])
def test_the_loop_scores_the_pool_with_the_mc_dropout_copy(
    heuristic: str, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scored with the deterministic model, every MC sample is the same: BALD and variance are
    # then 0 up to rounding, still finite, so nothing else in a run notices. The tiny model's
    # true scores are about 1e-4.
    real_acquire = utils.loop.run.acquire
    scorers = []

    def noting_the_scorer(unit, settings, model, mc_model, *args):
        scorers.append((model, mc_model))
        return real_acquire(unit, settings, model, mc_model, *args)

    monkeypatch.setattr(utils.loop.run, "acquire", noting_the_scorer)
    config = tiny_config(
        synthetic_root / "GlaS",
        synthetic_root / "splits",
        tmp_path,
        heuristic=heuristic,
        al_cycles=1,
        epochs=1,
    )
    ex.run(config_updates=config)
    ((model, mc_model),) = scorers
    assert mc_model is not model, "the pool was scored with the deterministic model"
    assert not mc_model.training
    assert any(isinstance(m, Dropout2d) for m in mc_model.modules())
    (acquired, _) = json.loads((tmp_path / f"{heuristic}_0.json").read_text())["acquired"]
    scores = [pick["score"] for pick in acquired]
    assert min(scores) > 1e-6
