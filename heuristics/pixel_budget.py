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
) -> tuple[list[int], bool]:
    """Per grade (one group without ``balance``), the longest prefix of ``picks`` whose cost
    stays within ``budget``; a grade whose pool runs out passes what it left to the next grade.

    Returns the chosen pool indices and whether the picks ran out before some budget was spent
    while that grade still had pool items, i.e. whether the strategy must be asked for more.
    """
    groups = [np.unique(grades)] if not balance else [[g] for g in np.unique(grades)]
    chosen: list[int] = []
    carried = 0.0
    short = False
    for members in groups:
        in_group = np.isin(grades, members)
        order = [int(i) for i in picks if in_group[i]]
        allowed = budget + carried
        spent = 0.0
        taken = 0
        for i in order:
            if spent + costs[i] > allowed:
                break
            spent += costs[i]
            taken += 1
        chosen += order[:taken]
        carried = 0.0
        if taken == len(order):  # every pick fitted: the budget may hold more
            if taken == int(in_group.sum()):
                carried = allowed - spent  # the grade's pool is exhausted
            else:
                short = True
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
    is enough unless a grade runs out and passes its budget on; then it is asked for more.
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
            strategy.select(selection), grades, costs, budget, selection.balance
        )
        if not short or k >= len(costs):
            return np.asarray(chosen, dtype=np.int64)
        k = min(2 * k, len(costs))
