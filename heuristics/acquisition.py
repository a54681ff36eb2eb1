"""Choosing which pool images to label next from their scores."""

from __future__ import annotations

import numpy as np


def select_for_labelling(
    scores: np.ndarray, grades: np.ndarray, n_per_step: int, balance: bool
) -> np.ndarray:
    """Pool indices to label, highest score first.

    Without ``balance`` the ``n_per_step`` best scores. With ``balance`` the ``n_per_step`` best of
    each image-level class (benign / malignant) so the labelled set stays balanced; a class with
    too few images left gives what it has and the best remaining images of the other classes fill
    the gap. A pool smaller than the request is taken whole.
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
    wanted = n_per_step * max(len(classes), 2)
    if len(order) <= wanted:
        return order
    chosen = [i for c in classes for i in order[grades[order] == c][:n_per_step]]
    taken = set(chosen)
    chosen += [i for i in order if i not in taken][: wanted - len(chosen)]
    return np.array(sorted(chosen, key=lambda i: -scores[i]), dtype=np.int64)
