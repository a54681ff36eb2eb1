"""Selection under a pixel budget: what a region-labelling cycle may spend.

Regions differ in area (clipped or widened edge tiles, superpixels), so a fixed number of
regions is not a fixed cost: a heuristic that prefers small regions would label fewer pixels
per cycle than random. Instead every strategy ranks as usual, and its picks are taken in the
order it made them until the budget is spent. Strategies stay unchanged: each returns its picks
in order of choice (top-k by score, sampling order, greedy order). A prefix is then a draw from
the distribution of a smaller batch, not the smaller batch itself: a seeded sampler draws other
items for another batch size, and ``suggestive`` sizes its candidate set by the batch it is
asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from heuristics.strategies import Selection, Strategy


def most_that_fit(costs: np.ndarray, budget: float) -> int:
    """How many items at most fit ``budget``: the count of the cheapest ones that do."""
    return int(np.searchsorted(np.cumsum(np.sort(costs)), budget, side="right"))


def take_within_budget(
    picks: np.ndarray,
    grades: np.ndarray,
    costs: np.ndarray,
    budget: float,
    balance: bool,
    n_groups: int = 1,
) -> tuple[list[int], bool]:
    """Per grade (one group without ``balance``), the longest prefix of ``picks`` whose cost
    stays within ``budget``.

    As in image mode, a balanced step spends ``budget`` for each of the split's ``n_groups``
    grades even when some are missing from the pool or run out in it. Unlike image mode, which
    fills such a gap from all grades' remaining items at once, that spare budget extends the
    other grades' prefixes in grade order, after each has spent its own: with three or more
    grades and one missing, the first grade gets first call on it.

    A grade whose first pick costs more than all the budget it may spend still gets that pick
    (a widened edge tile or a large superpixel against a budget of one tile): a cycle that
    labels nothing would only train again on the same set.

    Returns the chosen pool indices and whether the picks ran out before some budget was spent
    while that grade still had pool items, i.e. whether the strategy must be asked for more.
    """
    classes, group_of = np.unique(grades, return_inverse=True)
    if not balance:
        classes, group_of = classes[:1], np.zeros_like(group_of)
    orders: list[list[int]] = [[] for _ in classes]
    for i in picks:
        orders[group_of[i]].append(int(i))
    sizes = np.bincount(group_of, minlength=len(classes)).tolist()
    spare = budget * max(0, n_groups - len(classes)) if balance else 0.0
    taken = [0] * len(classes)
    left = [float(budget)] * len(classes)  # each grade's own budget not yet spent

    def extend(g: int, allowed: float) -> float:
        """Take grade ``g``'s next picks while they fit ``allowed``; return what they cost."""
        spent = 0.0
        for i in orders[g][taken[g] :]:
            if spent + costs[i] > allowed:
                break
            spent += costs[i]
            taken[g] += 1
        return spent

    for g in range(len(classes)):
        left[g] -= extend(g, left[g])
        if taken[g] == sizes[g]:  # the grade's pool is exhausted: its budget is spare
            spare, left[g] = spare + left[g], 0.0
    for g in range(len(classes)):
        if taken[g] == sizes[g] or spare <= 0:
            continue
        spent = extend(g, left[g] + spare)
        spare -= max(0.0, spent - left[g])
        left[g] = max(0.0, left[g] - spent)
        if taken[g] == sizes[g]:
            spare, left[g] = spare + left[g], 0.0
    short = any(k == len(o) < n for o, k, n in zip(orders, taken, sizes, strict=True))
    taken = [max(k, min(1, len(order))) for order, k in zip(orders, taken, strict=True)]
    chosen = [i for order, k in zip(orders, taken, strict=True) for i in order[:k]]
    return chosen, short


def select_within_budget(
    strategy: Strategy,
    selection_for: Callable[[int], Selection],
    costs: np.ndarray,
    budget: float,
) -> np.ndarray:
    """Pool indices a strategy chooses with ``budget`` pixels per grade (in all without
    balance). ``selection_for(k)`` builds the strategy's input asking for ``k`` items per grade,
    with a freshly seeded generator, so every call is reproducible.

    The strategy is asked for one more item than the cheapest items of a grade could fit, which
    is enough unless a grade gets spare budget (a grade missing or run out); then it is asked
    for more.
    """
    probe = selection_for(1)
    grades = probe.grades
    if probe.balance:
        fits = max(most_that_fit(costs[grades == g], budget) for g in np.unique(grades))
    else:
        fits = most_that_fit(costs, budget)
    k = max(1, fits + 1)
    while True:
        selection = selection_for(k)
        chosen, short = take_within_budget(
            strategy.select(selection), grades, costs, budget, selection.balance, selection.n_groups
        )
        if not short or k >= len(costs):
            return np.asarray(chosen, dtype=np.int64)
        k = min(2 * k, len(costs))
