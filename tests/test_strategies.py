"""Selection strategies and reductions: limits, sampling frequencies, hand-built geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from heuristics.reductions import REDUCTIONS, ReductionSettings, resolve_reduction
from heuristics.strategies import (
    STRATEGIES,
    Selection,
    k_center_greedy,
    max_cover,
    resolve_strategy,
)


def selection(scores, grades=None, n=1, balance=False, seed=0, **extra) -> Selection:
    scores = np.asarray(scores, dtype=np.float64)
    grades = np.zeros(len(scores), dtype=int) if grades is None else np.asarray(grades)
    rng = np.random.default_rng(seed)
    return Selection(scores, grades, n, balance, rng, **extra)


def test_power_at_vanishing_temperature_is_topk() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(30) * 1e-3  # small BALD-like scores: s**beta underflows without care
    grades = rng.integers(0, 2, 30)
    for seed in range(5):
        cold = selection(scores, grades, n=3, balance=True, seed=seed, temperature=1e-4)
        topk = selection(scores, grades, n=3, balance=True)
        assert sorted(STRATEGIES["power"].select(cold)) == sorted(STRATEGIES["topk"].select(topk))


def test_softmax_at_vanishing_temperature_is_topk_without_overflow() -> None:
    scores = np.array([0.1, 0.3, 0.2, 0.5, 0.45])
    for temperature in (1e-3, 1e-300, 1e-310):
        for seed in range(5):
            cold = selection(scores, n=3, seed=seed, temperature=temperature)
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                assert STRATEGIES["softmax"].select(cold).tolist() == [3, 4, 1]


def test_power_with_every_score_zero_draws_as_with_equal_scores() -> None:
    # No item is more informative than another: the draws of equal scores, without a 0 / 0.
    for seed in range(20):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            zeros = STRATEGIES["power"].select(selection(np.zeros(6), n=3, seed=seed))
        equal = STRATEGIES["power"].select(selection(np.full(6, 0.4), n=3, seed=seed))
        assert zeros.tolist() == equal.tolist()


def test_stratified_power_is_topk_at_the_last_cycle() -> None:
    rng = np.random.default_rng(4)
    scores, grades = rng.random(20), rng.integers(0, 2, 20)
    last = selection(scores, grades, n=2, balance=True, seed=9, cycle=7, n_cycles=8)
    topk = selection(scores, grades, n=2, balance=True)
    assert sorted(STRATEGIES["stratified_power"].select(last)) == sorted(
        STRATEGIES["topk"].select(topk)
    )


@pytest.mark.parametrize(
    ("name", "weights_of"),
    [
        ("power", lambda s: s),  # temperature 1: p proportional to the score
        ("softmax", lambda s: np.exp(s)),
        ("softrank", lambda s: 1.0 / stats.rankdata(-s)),
    ],
)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_single_draw_frequencies_follow_the_distribution(
    name: str, weights_of, scale: float
) -> None:
    # A maximum other than 1 tells apart dividing the scores by it, which power may do (it is
    # scale-free) and softmax must not (it is not).
    scores = np.array([0.1, 0.2, 0.3, 0.4, 1.0]) * scale
    expected = weights_of(scores) / weights_of(scores).sum()
    rng = np.random.default_rng(12345)
    draws = 20_000
    counts = np.zeros(len(scores))
    for _ in range(draws):
        one = Selection(scores, np.zeros(5, dtype=int), 1, False, rng)
        counts[STRATEGIES[name].select(one)[0]] += 1
    # Seeded, so the outcome is fixed; the threshold also holds for almost every other seed.
    assert stats.chisquare(counts, expected * draws).pvalue > 1e-3
    np.testing.assert_allclose(counts / draws, expected, atol=0.015)


def test_softrank_first_draw_is_baals_rank_distribution_exactly() -> None:
    from baal.active.heuristics.stochastics import RankBasedSampling

    class Recording:  # a generator that keeps the probabilities it is asked to draw from
        def __init__(self) -> None:
            self.p: list[np.ndarray] = []

        def choice(self, n: int, p: np.ndarray) -> int:
            self.p.append(p)
            return 0

    scores = np.random.default_rng(5).uniform(0.01, 0.5, 40)
    for temperature in (1.0, 0.3):
        rng = Recording()
        one = Selection(scores, np.zeros(40, dtype=int), 1, False, rng, temperature=temperature)
        STRATEGIES["softrank"].select(one)
        baal = RankBasedSampling(None, 1, temperature=temperature)._make_distribution(scores)
        assert np.array_equal(rng.p[0], baal / baal.sum())


@pytest.mark.parametrize("temperature", [1.0, 0.3, 4.0])
def test_power_and_softmax_weights_are_baals_distributions_exactly(temperature: float) -> None:
    from baal.active.heuristics.stochastics import GibbsSampling, PowerSampling

    from heuristics.strategies import power_weights, softmax_weights

    scores = np.random.default_rng(7).uniform(0.0, 0.7, 50)
    power = PowerSampling(None, 1, temperature=temperature)._make_distribution(scores.copy())
    gibbs = GibbsSampling(None, 1, temperature=temperature)._make_distribution(scores.copy())
    assert np.array_equal(power_weights(scores, temperature), power)
    assert np.array_equal(softmax_weights(scores, temperature), gibbs)


def test_softrank_keeps_each_items_rank_across_the_draws_of_a_batch() -> None:
    # Two draws without replacement from p(i) proportional to 1 / rank_i: item i is in the batch
    # with probability w_i / W + sum_{j != i} (w_j / W) (w_i / (W - w_j)). Re-ranking the items
    # left after the first draw would raise rank 2's inclusion from 0.433 to 0.468.
    scores = np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    w = 1.0 / np.arange(1, 7)
    first = w / w.sum()
    expected = first + np.array(
        [sum(first[j] * w[i] / (w.sum() - w[j]) for j in range(6) if j != i) for i in range(6)]
    )
    rng = np.random.default_rng(2024)
    draws = 20_000
    counts = np.zeros(6)
    grades = np.zeros(6, dtype=int)
    for _ in range(draws):
        counts[STRATEGIES["softrank"].select(Selection(scores, grades, 2, False, rng))] += 1
    assert expected[1] == pytest.approx(0.433, abs=1e-3)
    np.testing.assert_allclose(counts / draws, expected, atol=0.015)


def test_random_draws_every_item_alike() -> None:
    # The baseline every study is paired with: uniform over the pool, whatever the scores.
    scores = np.array([0.9, 0.8, 0.1, 0.05, 0.0, 0.3])
    rng = np.random.default_rng(2024)
    draws = 6_000
    counts = np.zeros(len(scores))
    for _ in range(draws):
        two = Selection(scores, np.zeros(6, dtype=int), 2, False, rng)
        picked = STRATEGIES["random"].select(two)
        assert len(set(picked.tolist())) == 2
        counts[picked] += 1
    assert stats.chisquare(counts, np.full(6, 2 * draws / 6)).pvalue > 1e-3


def test_stratified_power_halfway_has_half_the_temperature() -> None:
    # Cycle 2 of 5 acquisitions (0..4): tau = 1 - 2/4 = 0.5, keys log s + 0.5 * Gumbel.
    scores = np.array([0.05, 0.15, 0.3, 0.5, 0.2, 0.4])
    mid = selection(scores, n=3, seed=11, cycle=2, n_cycles=5)
    gumbel = np.random.default_rng(11).gumbel(size=6)
    expected = np.argsort(-(np.log(scores) + 0.5 * gumbel), kind="stable")[:3]
    assert STRATEGIES["stratified_power"].select(mid).tolist() == expected.tolist()
    at_one = np.argsort(-(np.log(scores) + gumbel), kind="stable")[:3]
    assert expected.tolist() != at_one.tolist()  # the seed tells the two temperatures apart


def test_stratified_power_at_full_temperature_samples_like_power() -> None:
    scores = np.array([0.05, 0.15, 0.3, 0.5])
    rng = np.random.default_rng(7)
    counts = np.zeros(4)
    draws = 20_000
    for _ in range(draws):
        first = Selection(scores, np.zeros(4, dtype=int), 1, False, rng, cycle=0, n_cycles=5)
        counts[STRATEGIES["stratified_power"].select(first)[0]] += 1
    np.testing.assert_allclose(counts / draws, scores / scores.sum(), atol=0.015)


def test_max_cover_picks_the_covering_set() -> None:
    # Three clusters of pool items on the unit circle; one candidate sits in each cluster and
    # two more duplicate the first cluster. The best 3 cover every cluster.
    angles = np.array([0.0, 0.05, -0.05, 2.1, 2.15, 4.2, 4.25])
    pool = np.stack([np.cos(angles), np.sin(angles)], 1)
    candidates = np.array([0, 1, 2, 3, 5])
    similarity = pool[candidates] @ pool.T
    chosen = max_cover(similarity, candidates, 3)
    assert {0, 1, 2} & set(chosen) and {3, 5} <= set(chosen) and len(set(chosen)) == 3


def test_k_center_on_2d_points_picks_the_known_centres() -> None:
    corners = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]
    interior = [[4.0, 5.0], [6.0, 5.0], [5.0, 4.0], [5.0, 6.0], [3.0, 3.0]]
    pool = np.array(interior[:2] + corners[:2] + interior[2:] + corners[2:])
    chosen = k_center_greedy(pool, np.array([[5.0, 5.0]]), 4)
    assert sorted(chosen) == [2, 3, 7, 8]  # the four corners, farthest from the labelled centre
    # Without labelled points the first pick is arbitrary, the rest still spread out.
    spread = k_center_greedy(pool, np.empty((0, 2)), 5)
    assert {2, 3, 7, 8} <= set(spread)


def test_coreset_counts_the_other_grades_picks_as_centres() -> None:
    # Labelled at the origin. Grade 0: one item far out at (10, 0). Grade 1: its near twin
    # (10, 0.1) and (0, 6). Once grade 0 has taken (10, 0), the twin is covered, so grade 1
    # takes (0, 6) although the twin lies farther from the labelled set.
    features = np.array([[10.0, 0.0], [10.0, 0.1], [0.0, 6.0]])
    pick = selection(
        np.ones(3),
        grades=[0, 1, 1],
        n=1,
        balance=True,
        features=features,
        labelled_features=np.zeros((1, 2)),
    )
    assert STRATEGIES["coreset"].select(pick).tolist() == [0, 2]


def test_suggestive_prefers_representative_among_the_uncertain() -> None:
    # Items 0-3 are most uncertain; 0 and 1 are duplicates of a rare direction, 2 and 3 sit in
    # the bulk of the pool. With k=1 and 4 candidates, max-cover takes one of the bulk.
    features = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]] + [[0.0, 1.0]] * 8)
    scores = np.array([0.9, 0.85, 0.8, 0.75] + [0.1] * 8)
    pick = STRATEGIES["suggestive"].select(
        selection(scores, n=1, features=features, suggestive_factor=4)
    )
    assert pick.tolist()[0] in (2, 3)


def test_suggestive_counts_the_other_grades_picks_as_covered() -> None:
    # Grade 0 is the bulk direction (0, 1), eight items, and takes one of it. Grade 1's two
    # candidates: a near twin of the bulk (most uncertain) and the rare direction (1, 0) with
    # three more items. Alone, the twin covers more; after grade 0's pick, the rare one does.
    features = np.array([[0.0, 1.0], [0.05, 1.0], [1.0, 0.0]] + [[0.0, 1.0]] * 7 + [[1.0, 0.0]] * 3)
    scores = np.array([0.9, 0.9, 0.85] + [0.1] * 10)
    grades = np.array([0, 1, 1] + [0] * 10)
    pick = STRATEGIES["suggestive"].select(
        selection(scores, grades, n=1, balance=True, features=features, suggestive_factor=2)
    )
    assert pick.tolist() == [0, 2]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_keeps_the_grade_balance(name: str) -> None:
    rng = np.random.default_rng(1)
    n = 24
    grades = np.array([0] * 16 + [1] * 8)
    chosen = STRATEGIES[name].select(
        Selection(
            scores=rng.random(n) + 0.01,
            grades=grades,
            n_per_step=2,
            balance=True,
            rng=rng,
            cycle=1,
            n_cycles=4,
            features=rng.normal(size=(n, 6)),
            labelled_features=rng.normal(size=(3, 6)),
        )
    )
    assert len(set(chosen.tolist())) == 4
    assert np.bincount(grades[chosen], minlength=2).tolist() == [2, 2]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_short_grade_is_filled_from_the_other(name: str) -> None:
    rng = np.random.default_rng(2)
    grades = np.array([0] * 6 + [1])
    chosen = STRATEGIES[name].select(
        Selection(
            rng.random(7) + 0.01,
            grades,
            2,
            True,
            rng,
            features=rng.normal(size=(7, 3)),
            labelled_features=rng.normal(size=(2, 3)),
        )
    )
    assert len(set(chosen.tolist())) == 4 and 6 in chosen


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'greedy'; choose one of: topk, random"):
        resolve_strategy("greedy")
    with pytest.raises(ValueError, match="unknown reduction 'max'; choose one of: mean, topq"):
        resolve_reduction("max")


def _probs_with_gland(size: int = 8) -> torch.Tensor:
    """[1, 2, H, W, 2]: a predicted gland in the top-left 2x2 corner, background elsewhere."""
    probs = torch.zeros(1, 2, size, size, 2)
    probs[:, 0] = 0.9
    probs[:, 1] = 0.1
    probs[:, 0, :2, :2] = 0.2
    probs[:, 1, :2, :2] = 0.8
    return probs


def test_reductions_on_a_hand_made_map() -> None:
    pixel_map = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8)  # 0..63
    probs = _probs_with_gland()
    settings = ReductionSettings(topq_percent=10.0, foreground_band=1)
    assert REDUCTIONS["mean"](pixel_map, probs, settings).item() == pytest.approx(31.5)
    # 10 % of 64 pixels rounds to 6: the mean of 58..63.
    assert REDUCTIONS["topq"](pixel_map, probs, settings).item() == pytest.approx(60.5)
    # Gland at rows/cols 0-1, dilated by 1: rows 0-2 x cols 0-2 = values 0,1,2,8,9,10,16,17,18.
    assert REDUCTIONS["foreground"](pixel_map, probs, settings).item() == pytest.approx(9.0)
    no_band = ReductionSettings(foreground_band=0)
    assert REDUCTIONS["foreground"](pixel_map, probs, no_band).item() == pytest.approx(4.5)
    background_only = torch.zeros_like(probs)
    background_only[:, 0] = 1.0
    fallback = REDUCTIONS["foreground"](pixel_map, background_only, settings).item()
    assert fallback == pytest.approx(31.5)
    assert math.isfinite(fallback)


@pytest.mark.parametrize("name", ["topk", "random"])
def test_a_step_keeps_every_groups_quota_after_one_group_runs_out(name: str) -> None:
    # Three groups in the split, group 2 exhausted in the pool: still 3 picks of n_per_step 1.
    grades = np.array([0, 0, 0, 1, 1, 1])
    scores = np.linspace(0.1, 0.6, 6)
    rng = np.random.default_rng(0)
    picked = STRATEGIES[name].select(Selection(scores, grades, 1, True, rng, n_groups=3))
    assert len(picked) == 3 and {0, 1} <= set(grades[picked].tolist())
    two = STRATEGIES[name].select(Selection(scores, grades, 1, True, rng, n_groups=2))
    assert len(two) == 2


@pytest.mark.parametrize("name", ["random", "power", "softrank"])
def test_a_missing_groups_quota_goes_to_no_grade_by_its_place_in_the_order(name: str) -> None:
    # Group 2 is missing, so one pick of three fills its gap: drawn from both grades' rest,
    # as topk takes the best of the rest, not always from grade 0.
    grades = np.array([0, 0, 0, 1, 1, 1])
    scores = np.full(6, 0.5)
    gap_grades = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        picked = STRATEGIES[name].select(Selection(scores, grades, 1, True, rng, n_groups=3))
        assert len(set(picked.tolist())) == 3
        gap_grades.append(np.bincount(grades[picked], minlength=2).argmax())
    assert set(gap_grades) == {0, 1}


def test_the_initial_set_spreads_over_the_grades_and_fills_from_the_rest() -> None:
    from heuristics.strategies import initial_labelled

    grades = np.array([0, 0, 0, 0, 0, 0, 1, 2, 2, 2])
    picked = initial_labelled(grades, 5, np.random.default_rng(0))
    # Shares 2, 2, 1 (the remainder to the first grades); grade 1 has one image, so the
    # missing one comes from the rest of the pool.
    assert len(set(picked.tolist())) == 5 and picked.tolist() == sorted(picked.tolist())
    counts = np.bincount(grades[picked], minlength=3)
    assert counts[1] == 1 and counts[0] >= 2 and counts[2] >= 1 and counts.sum() == 5
    odd = initial_labelled(np.array([0] * 5 + [1] * 5), 3, np.random.default_rng(1))
    assert np.bincount(np.array([0] * 5 + [1] * 5)[odd]).tolist() == [2, 1]
    # The run's seed alone fixes the set: every arm of a run starts from the same images.
    again = initial_labelled(grades, 5, np.random.default_rng(0))
    assert again.tolist() == picked.tolist()
    other = {tuple(initial_labelled(grades, 5, np.random.default_rng(s))) for s in range(20)}
    assert len(other) > 1


def test_one_grade_takes_its_missing_partners_share_in_one_draw() -> None:
    # A folder without groups.csv has one grade; a step still labels n_per_step for each of
    # two groups, drawn at once, as one sampler call for 2 * n_per_step items.
    grades = np.zeros(10, dtype=np.int64)
    picked = STRATEGIES["random"].select(
        Selection(np.full(10, 0.5), grades, 2, True, np.random.default_rng(0), n_groups=2)
    )
    expected = np.random.default_rng(0).choice(np.arange(10), 4, replace=False)
    assert picked.tolist() == expected.tolist()
