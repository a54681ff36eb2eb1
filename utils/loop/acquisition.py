"""One acquisition step: score the pool, let the strategy select, label what it chose.

Scoring (a heuristic's pixel map reduced per image or region) and selection (a strategy from
``heuristics.strategies``) stay separate; this module only feeds one into the other, through the
run's labelling unit (``utils.loop.units``), and records what was labelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heuristics import RANDOM
from heuristics.reductions import ReductionSettings
from heuristics.strategies import STRATEGIES, Selection, Strategy
from utils.config import ExperimentConfig
from utils.errors import UserError
from utils.loop.inference import MCSettings, PassOptions, ProbsSink
from utils.loop.units import LabellingUnit


@dataclass(frozen=True)
class AcquisitionSettings:
    """Everything an acquisition step reads, built once from the config (``from_config``)."""

    heuristic: str  # canonical
    strategy: Strategy
    reduction: str
    reduction_settings: ReductionSettings
    balance: bool
    run: int
    n_cycles: int
    temperature: float
    suggestive_factor: int
    device: torch.device
    amp_dtype: torch.dtype | None
    maps_dir: Path  # the run's figures, one folder per cycle (save_maps, save_uncerts)
    save_maps: bool = False
    save_uncerts: bool = False
    progress: bool = True

    @classmethod
    def from_config(
        cls,
        cfg: ExperimentConfig,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        maps_dir: Path,
    ) -> AcquisitionSettings:
        """``cfg`` must be ``validate``d (canonical heuristic). Random selection is one thing
        however it is asked for, so ``heuristic=random`` selects with the random strategy."""
        return cls(
            heuristic=cfg.heuristic,
            strategy=STRATEGIES[RANDOM if cfg.heuristic == RANDOM else cfg.strategy],
            reduction=cfg.reduction,
            reduction_settings=ReductionSettings(
                topq_percent=cfg.topq_percent,
                foreground_band=round(cfg.foreground_band * cfg.image_scale),
            ),
            balance=cfg.balance_al,
            run=cfg.run,
            n_cycles=cfg.al_cycles,
            temperature=cfg.temperature,
            suggestive_factor=cfg.suggestive_factor,
            device=device,
            amp_dtype=amp_dtype,
            maps_dir=maps_dir,
            save_maps=cfg.save_maps,
            save_uncerts=cfg.save_uncerts,
            progress=cfg.progress,
        )


# A pass made only for its probabilities (pseudo-labels) still computes a map; random has none.
PASS_ONLY_HEURISTIC = "entropy"


def pass_heuristic(heuristic: str) -> str:
    """The pixel map an MC pass computes for ``heuristic``."""
    return PASS_ONLY_HEURISTIC if heuristic == RANDOM else heuristic


def acquire(
    unit: LabellingUnit,
    settings: AcquisitionSettings,
    model: torch.nn.Module,
    mc_model: torch.nn.Module,
    mc_settings: MCSettings,
    cycle: int,
    on_probs: ProbsSink | None = None,
) -> list[dict[str, Any]]:
    """Score the unit's pool, select with the strategy, label; save figures if asked.

    ``on_probs`` gets every pool image's MC probabilities with its train index; with it the
    pool gets one MC pass even when the strategy scores nothing.
    Returns what was labelled, each with its score (None when nothing was scored).
    """
    strategy = settings.strategy
    items = unit.pool()
    scores, features, labelled_features, maps = np.empty(0), None, None, {}
    if strategy.needs_scores or strategy.mc_features or on_probs is not None:
        options = PassOptions(
            heuristic=pass_heuristic(settings.heuristic),
            reduction=settings.reduction,
            reduction_settings=settings.reduction_settings,
            with_features=strategy.mc_features,
            keep_maps=settings.save_maps,
            progress=settings.progress,
        )
        scored = unit.score(mc_model, mc_settings, options, on_probs)
        if strategy.needs_scores or strategy.mc_features:  # not for a pass made for on_probs
            items, scores, features = scored.items, scored.scores, scored.features
        maps = scored.maps
    if strategy.needs_labelled_features:
        features, labelled_features = unit.features(
            model, items, settings.device, settings.amp_dtype
        )
    for name, values in (("pool", features), ("labelled", labelled_features)):
        if values is not None and not np.isfinite(values).all():
            # argmax over NaN distances returns the first item: the pool order, unannounced.
            raise UserError(
                f"the {name} features are not finite at cycle {cycle}, so the strategy cannot "
                "compare them: the model's activations overflowed; use precision=fp32 or a lower "
                "lr (e.g. lr=0.01)"
            )
    if not np.isfinite(scores).all():
        # Top-k would rank NaN as it happens to sort and sampling would turn uniform: refuse.
        bad = int((~np.isfinite(scores)).sum())
        raise UserError(
            f"{bad} of {scores.size} pool scores are not finite at cycle {cycle}, so the pool "
            "cannot be ranked: the MC predictions are NaN or infinite; use precision=fp32 or a "
            "lower lr (e.g. lr=0.01)"
        )
    grades = unit.grades(items)
    # A step labels n_per_step per group of the train split, and at least two groups' worth
    # (docs/data.md): a folder without groups.csv spends what a GlaS cycle does.
    n_groups = max(len(np.unique(unit.store.labels)), 2)

    def selection_for(n_per_step: int) -> Selection:
        # Seeded from (run, cycle): a resumed cycle selects the same items.
        return Selection(
            scores=scores,
            grades=grades,
            n_per_step=n_per_step,
            balance=settings.balance,
            rng=np.random.default_rng([settings.run, cycle, 2]),
            n_groups=n_groups,
            cycle=cycle,
            n_cycles=settings.n_cycles,
            temperature=settings.temperature,
            suggestive_factor=settings.suggestive_factor,
            features=features,
            labelled_features=labelled_features,
        )

    picks = unit.select(strategy, selection_for, items)
    chosen = [items[i] for i in picks]
    acquired = unit.describe(chosen, [float(scores[i]) if scores.size else None for i in picks])
    unit.label(chosen)
    if (settings.save_maps or settings.save_uncerts) and scores.size:
        save_cycle_figures(unit, settings, cycle, scores, acquired, maps, unit.outlines(chosen))
    return acquired


def save_cycle_figures(
    unit: LabellingUnit,
    settings: AcquisitionSettings,
    cycle: int,
    scores: np.ndarray,
    acquired: list[dict[str, Any]],
    maps: dict[str, tuple[np.ndarray, np.ndarray]],
    outlines: dict[str, np.ndarray] | None = None,
) -> None:
    """The pool's score histogram and, per acquired image, its uncertainty map (with the
    acquired regions outlined in region mode). ``maps``: image name -> (pixel map, gland);
    ``outlines``: superpixels only, image name -> bool mask of its acquired regions."""
    from utils.loop.figures import save_score_distribution, save_uncertainty_map

    store = unit.store
    folder = settings.maps_dir / f"cycle_{cycle}"
    if settings.save_uncerts:
        save_score_distribution(
            folder / "pool_scores.png",
            scores,
            np.array([a["score"] for a in acquired]),
            settings.heuristic,
            cycle,
        )
    if not settings.save_maps:
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
            settings.heuristic,
            boxes=[] if outlines else [tuple(item["box"]) for item in items if "box" in item],
            region_mask=outlines[name] if outlines else None,
        )
