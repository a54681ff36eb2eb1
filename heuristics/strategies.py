"""Selection strategies: which pool items to label, given their scores, grades and features.

Scoring (a heuristic's pixel map, reduced per image) and selection are separate steps: every
strategy here is a pure function of a ``Selection`` and returns pool indices, so a new one plugs
into ``STRATEGIES`` without touching the loop. With ``balance`` every strategy picks
``n_per_step`` of each grade (benign / malignant), as the original study's balanced acquisition
does; a grade that runs out is filled from the others by the same rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats
from scipy.spatial.distance import cdist


@dataclass(frozen=True)
class Selection:
    """What a strategy may look at. Arrays are over the pool, in pool order."""

    scores: np.ndarray  # [N] higher = more informative; empty for strategies that need none
    grades: np.ndarray  # [N] 0 = benign, 1 = malignant
    n_per_step: int  # items to pick (per grade with ``balance``)
    balance: bool
    rng: np.random.Generator  # seeded from (run, cycle): a resumed cycle picks the same items
    # Grades of the whole train split: with ``balance`` a step picks n_per_step * n_groups
    # items even after a grade has run out in the pool.
    n_groups: int = 2
    cycle: int = 0
    n_cycles: int = 1  # acquisition cycles of the run, for schedules
    temperature: float = 1.0
    suggestive_factor: int = 2
    features: np.ndarray | None = None  # [N, D] pooled bottleneck features of the pool
    labelled_features: np.ndarray | None = field(default=None)  # [L, D] of the labelled set


@dataclass(frozen=True)
class Strategy:
    select: Callable[[Selection], np.ndarray]
    needs_scores: bool = True  # False: no MC pass over the pool at all
    # Pool features: from the MC passes that score the pool, unless the strategy also needs the
    # labelled set's. Then pool and labelled features both come from one deterministic pass
    # (dropout off), because distances between the two sets must compare like with like.
    needs_features: bool = False
    needs_labelled_features: bool = False

    @property
    def mc_features(self) -> bool:
        """Whether the pool's features come from its MC passes (see above)."""
        return self.needs_features and not self.needs_labelled_features


def initial_labelled(grades: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pool indices spread evenly over the grades, drawn with the run's generator."""
    classes = np.unique(grades)
    chosen: list[int] = []
    for i, c in enumerate(classes):
        share = n // len(classes) + (1 if i < n % len(classes) else 0)
        members = np.flatnonzero(grades == c)
        chosen += rng.choice(members, min(share, len(members)), replace=False).tolist()
    rest = np.setdiff1d(np.arange(len(grades)), chosen)
    chosen += rng.choice(rest, n - len(chosen), replace=False).tolist()
    return np.array(sorted(chosen))


def select_for_labelling(
    scores: np.ndarray, grades: np.ndarray, n_per_step: int, balance: bool, n_groups: int = 2
) -> np.ndarray:
    """Pool indices to label, highest score first.

    Without ``balance`` the ``n_per_step`` best scores. With ``balance`` the ``n_per_step`` best of
    each image-level class (benign / malignant) so the labelled set stays balanced; a class with
    too few images left gives what it has and the best remaining images of the other classes fill
    the gap, up to ``n_per_step`` for each of the split's ``n_groups``. A pool smaller than the
    request is taken whole.
    """
    if n_per_step <= 0:
        raise ValueError(f"n_data_to_label must be positive, got {n_per_step}")
    scores = np.asarray(scores, dtype=np.float64)
    grades = np.asarray(grades)
    # Stable sort on the negated score: ties keep pool order, so selection is deterministic.
    order = np.argsort(-scores, kind="stable")
    if not balance:
        return order[:n_per_step]
    classes = np.unique(grades)
    wanted = n_per_step * max(len(classes), n_groups)
    if len(order) <= wanted:
        return order
    chosen = [i for c in classes for i in order[grades[order] == c][:n_per_step]]
    taken = set(chosen)
    chosen += [i for i in order if i not in taken][: wanted - len(chosen)]
    return np.array(sorted(chosen, key=lambda i: -scores[i]), dtype=np.int64)


def _quota(selection: Selection) -> tuple[list[tuple[np.ndarray, int]], int]:
    """(pool indices of a grade, how many to pick there) per grade, and the gap left to fill.

    Mirrors ``select_for_labelling``: ``n_per_step`` per grade (one group without ``balance``);
    the gap that short grades leave, up to ``n_per_step`` for each of the split's ``n_groups``,
    goes to the one grade with items left if there is one (a single draw there), else is filled
    from all those grades' remaining items together, so that no grade takes it by its place in
    the order. The whole pool when it is smaller than the request.
    """
    n = len(selection.grades)
    if not selection.balance:
        return [(np.arange(n), min(selection.n_per_step, n))], 0
    classes = np.unique(selection.grades)
    wanted = min(n, selection.n_per_step * max(len(classes), selection.n_groups))
    groups = [np.flatnonzero(selection.grades == c) for c in classes]
    counts = [min(selection.n_per_step, len(g)) for g in groups]
    gap = wanted - sum(counts)
    with_more = [i for i, g in enumerate(groups) if len(g) > counts[i]]
    if gap and len(with_more) == 1:  # e.g. a folder without groups.csv: one grade
        counts[with_more[0]] += gap
        gap = 0
    return list(zip(groups, counts, strict=True)), gap


def _per_grade(
    selection: Selection, pick: Callable[[np.ndarray, int, list[int]], list[int]]
) -> np.ndarray:
    """Run ``pick(group, k, chosen_so_far)`` per grade group, then once over the rest for a gap."""
    chosen: list[int] = []
    quota, gap = _quota(selection)
    for group, k in quota:
        if k > 0:
            chosen += pick(group, k, list(chosen))
    if gap > 0:
        rest = np.setdiff1d(np.arange(len(selection.grades)), chosen)
        chosen += pick(rest, gap, list(chosen))
    return np.asarray(chosen, dtype=np.int64)


def topk(selection: Selection) -> np.ndarray:
    """The highest scores, per grade: the original study's rule (greedy, deterministic)."""
    return select_for_labelling(
        selection.scores,
        selection.grades,
        selection.n_per_step,
        selection.balance,
        selection.n_groups,
    )


def random_pick(selection: Selection) -> np.ndarray:
    """Uniformly random items, per grade: the passive baseline. Needs no model pass."""
    return _per_grade(
        selection, lambda group, k, _: selection.rng.choice(group, k, replace=False).tolist()
    )


def _sample_sequentially(weights_of: Callable[[np.ndarray], np.ndarray], n: int, k: int, rng):
    """Draw ``k`` of ``n`` positions without replacement; each draw takes position i of those
    left with probability ``weights_of(left)[i]`` (normalised here).

    ``weights_of`` sees the positions left so that it can rescale their weights before they
    underflow: a distribution concentrated on fewer than ``k`` items (very low temperature) then
    still yields ``k`` picks, and the limit is exactly top-k.
    """
    left = np.arange(n)
    picked: list[int] = []
    for _ in range(k):
        weights = np.clip(weights_of(left), 0.0, None)
        total = weights.sum()
        if not np.isfinite(total) or total <= 0:
            weights = np.ones(len(left))  # every weight vanished: nothing to prefer
            total = len(left)
        position = int(rng.choice(len(left), p=weights / total))
        picked.append(int(left[position]))
        left = np.delete(left, position)
    return picked


def power_weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    """p(i) proportional to score_i ** (1 / temperature), as baal's ``PowerSampling``; uniform
    when every score is 0, where no item is more informative than another."""
    weights = scores ** (1 / temperature)
    total = weights.sum()
    return weights / total if total > 0 else np.full(len(weights), 1.0 / len(weights))


def softmax_weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    """p(i) proportional to exp(score_i / temperature), as baal's ``GibbsSampling``."""
    with np.errstate(over="ignore"):
        scaled = scores / temperature
        if not np.isfinite(scaled).all():
            # A vanishing temperature overflows to inf, and softmax to NaN. Shifted first, only
            # the items below the maximum overflow, to -inf: the top-k limit.
            scaled = (scores - scores.max()) / temperature
    return special.softmax(scaled)


def _stochastic(
    weights: Callable[[np.ndarray, float], np.ndarray], normalise: bool
) -> Callable[[Selection], np.ndarray]:
    """A strategy sampling items with probabilities ``weights(scores, temperature)``.

    Power and softmax weights are per item, so recomputing them over the items left after each
    draw only rescales them: the draws are the paper's sampling without replacement."""

    def select(selection: Selection) -> np.ndarray:
        def distribution(scores: np.ndarray) -> np.ndarray:
            return weights(scores, selection.temperature)

        def pick(group: np.ndarray, k: int, _: list[int]) -> list[int]:
            scores = selection.scores[group]

            def weights_of(left: np.ndarray) -> np.ndarray:
                rest = scores[left]
                # Power sampling is scale-free; dividing by the maximum keeps s**beta from
                # underflowing to all zeros at high beta.
                return distribution(rest / rest.max() if normalise and rest.max() > 0 else rest)

            return group[_sample_sequentially(weights_of, len(group), k, selection.rng)].tolist()

        return _per_grade(selection, pick)

    return select


def softrank(selection: Selection) -> np.ndarray:
    """Soft-rank acquisition: p(i) proportional to rank_i ** (-1 / temperature), rank 1 = highest
    score, sampled without replacement (Kirsch et al., TMLR 2023, arXiv 2106.12059).

    The ranks are fixed once per grade, as in the paper and in baal's ``RankBasedSampling``
    (which draws without replacement from fixed weights): re-ranking the items left after each
    draw would promote every item below the pick. Its distribution is baal's, operation for
    operation. Depends on the order of the scores only.
    """
    beta = 1.0 / selection.temperature

    def pick(group: np.ndarray, k: int, _: list[int]) -> list[int]:
        ranks = stats.rankdata(-selection.scores[group])

        def weights_of(left: np.ndarray) -> np.ndarray:
            # Dividing by the best rank left keeps its weight at 1 however high beta is.
            weights = (ranks[left] / ranks[left].min()) ** (-beta)
            return weights / weights.sum()

        return group[_sample_sequentially(weights_of, len(group), k, selection.rng)].tolist()

    return _per_grade(selection, pick)


power = _stochastic(power_weights, normalise=True)
power.__doc__ = """Power acquisition: p(i) proportional to score_i ** (1 / temperature), sampled
without replacement (Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal,
"Stochastic Batch Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023,
arXiv 2106.12059; baal's ``PowerSampling`` distribution). Temperature 1, the paper's default."""

softmax = _stochastic(softmax_weights, normalise=False)
softmax.__doc__ = """Softmax acquisition: p(i) proportional to exp(score_i / temperature)
(Kirsch et al., TMLR 2023, arXiv 2106.12059; baal's ``GibbsSampling`` distribution)."""


def stratified_power(selection: Selection) -> np.ndarray:
    """Power noising on log scores with a temperature that decays over the cycles, picks
    stratified by grade; after ClaSP PE (Lüth, Traub et al., "Finally Outshining the Random
    Baseline", arXiv 2601.13677), the only method reported to beat improved random baselines
    across the nnActive settings.

    The key of item i is log(score_i) + tau_c * Gumbel_i and the top keys of each grade are
    taken. At tau = 1 this is exactly power sampling with beta = 1 (the Gumbel-top-k trick);
    at tau = 0 it is top-k. tau decays linearly from ``temperature`` at the first acquisition to
    0 at the last, so early batches explore (diverse) and late ones exploit (greedy); a run of
    one acquisition (``al_cycles=1``) takes it at ``temperature``. The linear
    schedule over the run's own budget is our choice, fixed before any experiment; ClaSP PE's
    exact schedule is tied to nnActive's budgets.
    """
    last = max(selection.n_cycles - 1, 1)
    tau = selection.temperature * max(0.0, 1.0 - selection.cycle / last)
    log_scores = np.log(np.clip(selection.scores, np.finfo(np.float64).tiny, None))
    keys = log_scores + tau * selection.rng.gumbel(size=len(log_scores))

    def pick(group: np.ndarray, k: int, _: list[int]) -> list[int]:
        order = np.argsort(-keys[group], kind="stable")
        return group[order[:k]].tolist()

    return _per_grade(selection, pick)


def _cosine(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.clip(norms, 1e-12, None)


def max_cover(
    similarity: np.ndarray, candidates: np.ndarray, k: int, covered: np.ndarray | None = None
) -> list[int]:
    """Greedy max-cover: add the candidate that most raises sum_j max_{s in S} sim(s, j).

    ``similarity`` is ``[M, J]`` between M candidates and the J items to cover; ``covered``
    ``[J]`` is what picks made before already cover (default none). Greedy is the classic
    (1 - 1/e) approximation of this submodular objective, as in Yang et al. 2017.
    """
    covered = np.zeros(similarity.shape[1]) if covered is None else np.maximum(covered, 0.0)
    chosen: list[int] = []
    for _ in range(min(k, len(candidates))):
        gains = np.maximum(similarity, covered).sum(1) - covered.sum()
        gains[chosen] = -np.inf
        best = int(np.argmax(gains))
        chosen.append(best)
        covered = np.maximum(covered, similarity[best])
    return [int(candidates[i]) for i in chosen]


def suggestive(selection: Selection) -> np.ndarray:
    """Suggestive Annotation (Yang, Zhang, Chen, Zhang & Chen, MICCAI 2017, arXiv 1706.04737):
    take the ``suggestive_factor`` x k most uncertain items, then choose k of them by greedy
    max-cover of the whole pool under cosine similarity of the bottleneck features. The paper
    takes K = 16 candidates for k = 8 picks, hence the factor 2. Per grade, as ``balance_al``
    asks, a grade's picks count what the grades before it picked as covered: one max-cover.
    """
    unit = _cosine(_need(selection.features, "suggestive"))

    def pick(group: np.ndarray, k: int, chosen: list[int]) -> list[int]:
        order = group[np.argsort(-selection.scores[group], kind="stable")]
        candidates = order[: max(k, selection.suggestive_factor * k)]
        similarity = unit[candidates] @ unit.T  # [K, N]
        covered = (unit[chosen] @ unit.T).max(0) if chosen else None  # [N]
        return max_cover(similarity, candidates, k, covered)

    return _per_grade(selection, pick)


def k_center_greedy(
    pool: np.ndarray, centres: np.ndarray, k: int, candidates: np.ndarray | None = None
) -> list[int]:
    """Greedy k-center: repeatedly take the point farthest (Euclidean) from every centre so far.

    ``pool`` ``[N, D]``, ``centres`` ``[L, D]`` (may be empty); picks only among ``candidates``
    (default: all). Sener & Savarese, "Active Learning for Convolutional Neural Networks: A
    Core-Set Approach", ICLR 2018: a 2-approximation of the minimax facility location.
    """
    candidates = np.arange(len(pool)) if candidates is None else np.asarray(candidates)
    # cdist, not broadcasting: an [N, L, D] difference would not fit for a region pool.
    distance = cdist(pool, centres).min(1) if len(centres) else np.full(len(pool), np.inf)
    chosen: list[int] = []
    for _ in range(min(k, len(candidates))):
        gaps = distance[candidates].copy()
        gaps[np.isin(candidates, chosen)] = -np.inf
        # With no centre yet every gap is inf, and argmax takes the first candidate.
        best = int(candidates[int(np.argmax(gaps))])
        chosen.append(best)
        distance = np.minimum(distance, cdist(pool, pool[best : best + 1])[:, 0])
    return chosen


def coreset(selection: Selection) -> np.ndarray:
    """Core-set selection: k-center greedy on the bottleneck features, centres = the labelled
    set plus the picks so far (Sener & Savarese, ICLR 2018), one grade at a time."""
    pool = _need(selection.features, "coreset")
    labelled = _need(selection.labelled_features, "coreset")

    def pick(group: np.ndarray, k: int, chosen: list[int]) -> list[int]:
        centres = np.concatenate([labelled, pool[chosen]]) if chosen else labelled
        return k_center_greedy(pool, centres, k, candidates=group)

    return _per_grade(selection, pick)


def _need(array: np.ndarray | None, strategy: str) -> np.ndarray:
    if array is None:
        raise ValueError(f"strategy {strategy} needs features; the loop computes them")
    return array


STRATEGIES: dict[str, Strategy] = {
    "topk": Strategy(topk),
    "random": Strategy(random_pick, needs_scores=False),
    "power": Strategy(power),
    "softmax": Strategy(softmax),
    "softrank": Strategy(softrank),
    "stratified_power": Strategy(stratified_power),
    "suggestive": Strategy(suggestive, needs_features=True),
    "coreset": Strategy(
        coreset, needs_scores=False, needs_features=True, needs_labelled_features=True
    ),
}


def resolve_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return name
