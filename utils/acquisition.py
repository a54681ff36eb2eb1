"""One acquisition step: score the pool, let the strategy select, label what it chose.

Scoring (a heuristic's pixel map reduced per image or region) and selection (a strategy from
``heuristics.strategies``) stay separate; this module only feeds one into the other and records
what was labelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from baal.active import ActiveLearningDataset
from torch.utils.data import Subset

from data.regions import RegionLabels
from data.segmentation import ImageStore, SegmentationDataset
from heuristics import RANDOM
from heuristics.pixel_budget import select_within_budget
from heuristics.reductions import ReductionSettings
from heuristics.strategies import STRATEGIES, Selection, Strategy
from utils.config import ExperimentConfig
from utils.inference import (
    MCSettings,
    ProbsSink,
    pooled_features,
    region_features,
    score_pool,
    score_regions,
)


@dataclass(frozen=True)
class AcquisitionContext:
    """What acquisition needs besides the models: the pool's images and how to run them."""

    store: ImageStore
    device: torch.device
    amp_dtype: torch.dtype | None
    reduction_settings: ReductionSettings
    maps_dir: Path  # the run's figures, one folder per cycle (save_maps, save_uncerts)


def _strategy(cfg: ExperimentConfig, heuristic: str) -> Strategy:
    return STRATEGIES[RANDOM if heuristic == RANDOM else cfg.strategy]


# A pass made only for its probabilities (pseudo-labels) still computes a map; random has none.
PASS_ONLY_HEURISTIC = "entropy"


def _needs_pass(strategy: Strategy, on_probs: ProbsSink | None) -> bool:
    return strategy.needs_scores or strategy.mc_features or on_probs is not None


def _selection(
    cfg: ExperimentConfig,
    cycle: int,
    scores: np.ndarray,
    grades: np.ndarray,
    n_per_step: int,
    features: np.ndarray | None,
    labelled_features: np.ndarray | None,
) -> Selection:
    """The strategy's inputs; its generator is seeded from (run, cycle) so a resumed cycle
    selects the same items."""
    return Selection(
        scores=scores,
        grades=grades,
        n_per_step=n_per_step,
        balance=cfg.balance_al,
        rng=np.random.default_rng([cfg.run, cycle, 2]),
        cycle=cycle,
        n_cycles=cfg.al_cycles,
        temperature=cfg.temperature,
        suggestive_factor=cfg.suggestive_factor,
        features=features,
        labelled_features=labelled_features,
    )


def acquire(
    cfg: ExperimentConfig,
    heuristic: str,
    al_set: ActiveLearningDataset,
    context: AcquisitionContext,
    model: torch.nn.Module,
    mc_model: torch.nn.Module,
    mc_settings: MCSettings,
    cycle: int,
    on_probs: ProbsSink | None = None,
) -> list[dict[str, Any]]:
    """Score the pool, select with the strategy, label; save figures if asked.

    ``on_probs`` gets every pool image's MC probabilities with its train index; with it the
    pool gets one MC pass even when the strategy scores nothing.
    Returns what was labelled, ``[{"name", "score"}]`` (score None when nothing was scored).
    """
    store = context.store
    strategy = _strategy(cfg, heuristic)
    pool_indices = np.flatnonzero(~al_set.labelled)  # oracle index of each pool position
    result = None
    scores, features, labelled_features = np.empty(0), None, None
    if _needs_pass(strategy, on_probs):
        sink = None if on_probs is None else lambda i, probs: on_probs(int(pool_indices[i]), probs)
        result = score_pool(
            mc_model,
            al_set.pool,
            heuristic if heuristic != RANDOM else PASS_ONLY_HEURISTIC,
            mc_settings,
            keep_maps=cfg.save_maps,
            progress=cfg.progress,
            reduction=cfg.reduction,
            reduction_settings=context.reduction_settings,
            with_features=strategy.mc_features,
            on_probs=sink,
        )
        if strategy.needs_scores or strategy.mc_features:  # not for a pass made for on_probs
            scores, features = result.scores, result.features
    if strategy.needs_labelled_features:  # both sets from one deterministic pass
        images = SegmentationDataset(store)
        device, amp_dtype = context.device, context.amp_dtype
        features, labelled_features = (
            pooled_features(model, Subset(images, indices.tolist()), device, amp_dtype)
            for indices in (pool_indices, np.flatnonzero(al_set.labelled))
        )
    selection = _selection(
        cfg,
        cycle,
        scores,
        store.labels[pool_indices],
        cfg.n_data_to_label,
        features,
        labelled_features,
    )
    chosen = strategy.select(selection)
    acquired = [
        {
            "name": store.names[pool_indices[i]],
            "score": float(scores[i]) if scores.size else None,
        }
        for i in chosen
    ]
    al_set.label([int(i) for i in chosen])
    if (cfg.save_maps or cfg.save_uncerts) and scores.size:
        save_cycle_figures(cfg, heuristic, cycle, context, scores, acquired, result.maps)
    return acquired


def acquire_regions(
    cfg: ExperimentConfig,
    heuristic: str,
    regions: RegionLabels,
    context: AcquisitionContext,
    model: torch.nn.Module,
    mc_model: torch.nn.Module,
    mc_settings: MCSettings,
    cycle: int,
    on_probs: ProbsSink | None = None,
    budget: float | None = None,
) -> list[dict[str, Any]]:
    """Region labelling: score every unlabelled region, select by the strategy, label.

    A cycle spends ``budget`` pixels, by default those of ``n_data_to_label`` average images
    per grade: the strategy's picks are taken in its order while they fit that budget.
    ``on_probs`` as in ``acquire``, for every image with an unlabelled region.
    """
    store = context.store
    strategy = _strategy(cfg, heuristic)
    pool = regions.pool()
    scores, features, labelled_features, maps = np.empty(0), None, None, {}
    if _needs_pass(strategy, on_probs):
        result = score_regions(
            mc_model,
            store,
            regions,
            heuristic if heuristic != RANDOM else PASS_ONLY_HEURISTIC,
            mc_settings,
            reduction=cfg.reduction,
            reduction_settings=context.reduction_settings,
            with_features=strategy.mc_features,
            progress=cfg.progress,
            keep_maps=cfg.save_maps,
            on_probs=on_probs,
        )
        if strategy.needs_scores or strategy.mc_features:  # not for a pass made for on_probs
            pool, scores, features = result.regions, result.scores, result.features
        maps = {store.names[image]: pair for image, pair in result.maps.items()}
    if strategy.needs_labelled_features:  # both sets from one deterministic pass
        labelled = [(i, t) for i, tiles in enumerate(regions.labelled) for t in sorted(tiles)]
        features, labelled_features = (
            region_features(model, store, regions, items, context.device, context.amp_dtype)
            for items in (pool, labelled)
        )
    if budget is None:
        budget = cfg.n_data_to_label * regions.total_pixels() / len(regions.shapes)
    grades = store.labels[[image for image, _ in pool]]
    picks = select_within_budget(
        strategy,
        lambda k: _selection(cfg, cycle, scores, grades, k, features, labelled_features),
        np.array([regions.area(region) for region in pool], dtype=np.float64),
        budget,
    )
    chosen = [pool[i] for i in picks]
    regions.label(chosen)
    score_of = dict(zip(pool, scores.tolist(), strict=True)) if scores.size else {}
    acquired = [
        {
            "name": store.names[image],
            "region": tile,
            "box": list(regions.boxes[image][tile]),
            "score": score_of.get((image, tile)),
        }
        for image, tile in chosen
    ]
    if (cfg.save_maps or cfg.save_uncerts) and scores.size:
        outlines = None
        if regions.segments is not None:
            by_image: dict[int, list[int]] = {}
            for image, index in chosen:
                by_image.setdefault(image, []).append(index)
            outlines = {
                store.names[image]: np.isin(regions.segments[image], indices)
                for image, indices in by_image.items()
            }
        save_cycle_figures(cfg, heuristic, cycle, context, scores, acquired, maps, outlines)
    return acquired


def save_cycle_figures(
    cfg: ExperimentConfig,
    heuristic: str,
    cycle: int,
    context: AcquisitionContext,
    scores: np.ndarray,
    acquired: list[dict[str, Any]],
    maps: dict[str, tuple[np.ndarray, np.ndarray]],
    outlines: dict[str, np.ndarray] | None = None,
) -> None:
    """The pool's score histogram and, per acquired image, its uncertainty map (with the
    acquired regions outlined in region mode). ``maps``: image name -> (pixel map, gland);
    ``outlines``: superpixels only, image name -> bool mask of its acquired regions."""
    from utils.figures import save_score_distribution, save_uncertainty_map

    store = context.store
    folder = context.maps_dir / f"cycle_{cycle}"
    if cfg.save_uncerts:
        save_score_distribution(
            folder / "pool_scores.png",
            scores,
            np.array([a["score"] for a in acquired]),
            heuristic,
            cycle,
        )
    if not cfg.save_maps:
        return
    by_name: dict[str, list[dict[str, Any]]] = {}
    for item in acquired:
        by_name.setdefault(item["name"], []).append(item)
    for name, items in by_name.items():
        index = store.names.index(name)
        uncertainty, gland = maps[name]
        save_uncertainty_map(
            folder / f"{name}.png",
            store.images[index].permute(1, 2, 0).numpy(),
            store.masks[index].numpy(),
            gland,
            uncertainty,
            max(item["score"] for item in items),
            name,
            heuristic,
            boxes=[] if outlines else [tuple(item["box"]) for item in items if "box" in item],
            region_mask=outlines[name] if outlines else None,
        )
