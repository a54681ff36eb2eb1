"""Splits that keep each patient's images together, or at least each group's share.

A patient (or slide) seen in training flatters the Dice on its other images, and validation on
a patient of the pool chooses weights for what the pool already shows.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from data.segmentation import DataError


def patient_split(
    names: list[str],
    fraction: float,
    groups: dict[str, int],
    patients: dict[str, str],
    seed: int,
    kept_patients: int = 1,
) -> tuple[list[str], list[str]]:
    """``(kept, out)`` with every patient's images on one side, from ``names`` of more than
    ``kept_patients`` patients: ``out`` is the fold nearest ``fraction`` of the images among
    the ``round(1 / fraction)`` folds (at most one per patient) of scikit-learn's
    ``StratifiedGroupKFold``, which balances the groups across folds as far as whole patients
    allow, that leaves at least ``kept_patients`` patients in ``kept``."""
    owners = [patients[n] for n in names]
    n_patients = len(set(owners))
    if n_patients <= kept_patients:
        raise _too_few(names, n_patients, kept_patients)
    n_splits = min(max(2, round(1 / fraction)), n_patients)
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A group smaller than the number of folds cannot be in every fold; that is expected.
        warnings.simplefilter("ignore", UserWarning)
        splits = list(folds.split(names, [groups[n] for n in names], owners))
    usable = [(k, o) for k, o in splits if len(o) and len({owners[i] for i in k}) >= kept_patients]
    if not usable:
        raise _too_few(names, n_patients, kept_patients)
    kept, out = min(usable, key=lambda split: abs(len(split[1]) - fraction * len(names)))
    return [names[i] for i in kept], [names[i] for i in out]


def _too_few(names: list[str], n_patients: int, kept_patients: int) -> DataError:
    return DataError(
        f"{len(names)} images of {n_patients} patient(s) have no split by patient that keeps "
        f"{kept_patients} patient(s) on the other side; add patients or write the split files "
        "by hand (docs/data.md)"
    )


def stratified_split(
    names: list[str], n_out: int, groups: dict[str, int], seed: int
) -> tuple[list[str], list[str]]:
    """``(kept, out)`` with ``n_out`` of ``names`` drawn out, each group in the same share on
    both sides where that is possible (every group has 2 or more images, and there are no more
    groups than either side has images), else drawn plainly at random."""
    labels = [groups[n] for n in names]
    counts = np.bincount(labels)
    n_groups = int((counts > 0).sum())
    stratify = counts[counts > 0].min() >= 2 and n_groups <= min(n_out, len(names) - n_out)
    kept, out = train_test_split(
        names, test_size=n_out, random_state=seed, stratify=labels if stratify else None
    )
    return list(kept), list(out)
