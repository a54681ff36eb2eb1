"""What a pathologist labels: whole images or regions, behind one interface.

The loop and ``acquire`` never ask which unit a run uses; they ask the unit. An item of the
pool is a train image index (``ImageUnit``) or an ``(image, region)`` pair (``RegionUnit``).
Both units start from the same whole images, labelled in the ``ActiveLearningDataset``, so the
first cycle of an image run and of a region run train on the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from baal.active import ActiveLearningDataset
from torch import nn
from torch.utils.data import Dataset, Subset

from data.partial_masks import PartialMaskDataset
from data.regions import RegionLabels
from data.segmentation import ImageStore, SegmentationDataset
from data.transforms import train_transform
from heuristics.pixel_budget import select_within_budget
from heuristics.strategies import Selection, Strategy
from utils.loop.inference import (
    MCSettings,
    PassOptions,
    ProbsSink,
    pooled_features,
    region_features,
    score_pool,
    score_regions,
)
from utils.runs.state import ResumeError, RunState
from utils.text import counted


@dataclass
class Scored:
    """An MC pass's result, over ``items`` in the order scored."""

    items: list[Any]
    scores: np.ndarray  # [N]
    features: np.ndarray | None  # [N, D]
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # by name


class LabellingUnit(Protocol):
    """The pool state of a run and every question the loop asks about it."""

    store: ImageStore
    al_set: ActiveLearningDataset  # whole images labelled (the initial set in region mode)
    # Whether training crops may be cut on the device from whole labelled images; region
    # training draws its crops around annotated pixels, on the CPU.
    whole_images: bool

    def start(self) -> None:
        """Take over the whole images labelled in ``al_set`` at the start of a run."""

    def n_labelled(self) -> int:
        """Images with any label."""

    def labelled_pixels(self) -> int: ...

    def training_data(self, patch: tuple[int, int]) -> Dataset: ...

    def annotated(self, image: int) -> torch.Tensor | None:
        """Bool ``[H, W]`` of the labelled pixels of ``image``; None when it has none."""

    def unlabelled_images(self) -> list[int]:
        """Images with an unlabelled pixel: the pool of semi-supervised training."""

    def pool(self) -> list[Any]: ...

    def score(self, mc_model: nn.Module, settings: MCSettings, options: PassOptions,
              on_probs: ProbsSink | None) -> Scored:  # fmt: skip
        """One MC pass over the pool; ``on_probs`` gets each image's probabilities with its
        train index."""

    def features(
        self, model: nn.Module, items: list[Any], device: torch.device, dtype: torch.dtype | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bottleneck features of ``items`` and of the labelled set, from one deterministic
        pass, so that distances between the two compare like with like."""

    def grades(self, items: list[Any]) -> np.ndarray: ...

    def select(
        self, strategy: Strategy, selection_for: Callable[[int], Selection], items: list[Any]
    ) -> np.ndarray:
        """Positions in ``items`` the strategy picks for this cycle's labels."""

    def label(self, chosen: list[Any]) -> None: ...

    def describe(self, chosen: list[Any], scores: Sequence[float | None]) -> list[dict[str, Any]]:
        """What the record says was labelled."""

    def outlines(self, chosen: list[Any]) -> dict[str, np.ndarray] | None:
        """Image name -> bool mask of its chosen superpixels, for figures; None for boxes."""

    def save(self, state: RunState) -> None: ...

    def restore(self, state: RunState, stem: str) -> None:
        """Put back what the saved run had labelled beyond ``al_set``."""

    def summary(self, acquired: list[dict[str, Any]]) -> str: ...


@dataclass
class ImageUnit:
    """Whole images: the pool is ``al_set``'s, and a cycle labels ``n_per_step`` of them."""

    store: ImageStore
    al_set: ActiveLearningDataset
    n_per_step: int
    whole_images: bool = True

    def start(self) -> None:
        pass

    def n_labelled(self) -> int:
        return int(self.al_set.n_labelled)

    def labelled_pixels(self) -> int:
        return int(self.store.pixels[self.al_set.labelled].sum())

    def training_data(self, patch: tuple[int, int]) -> Dataset:
        return self.al_set

    def annotated(self, image: int) -> torch.Tensor | None:
        if not bool(self.al_set.labelled[image]):
            return None
        return torch.ones(self.store.images[image].shape[1:], dtype=torch.bool)

    def unlabelled_images(self) -> list[int]:
        return np.flatnonzero(~self.al_set.labelled).tolist()

    def pool(self) -> list[int]:
        return self.unlabelled_images()

    def score(
        self,
        mc_model: nn.Module,
        settings: MCSettings,
        options: PassOptions,
        on_probs: ProbsSink | None,
    ) -> Scored:
        items = self.pool()
        sink = None if on_probs is None else lambda i, probs: on_probs(items[i], probs)
        result = score_pool(mc_model, self.al_set.pool, settings, options, sink)
        return Scored(items, result.scores, result.features, result.maps)

    def features(
        self, model: nn.Module, items: list[int], device: torch.device, dtype: torch.dtype | None
    ) -> tuple[np.ndarray, np.ndarray]:
        images = SegmentationDataset(self.store)
        pool, labelled = (
            pooled_features(model, Subset(images, indices), device, dtype)
            for indices in (items, np.flatnonzero(self.al_set.labelled).tolist())
        )
        return pool, labelled

    def grades(self, items: list[int]) -> np.ndarray:
        return self.store.labels[items]

    def select(
        self, strategy: Strategy, selection_for: Callable[[int], Selection], items: list[int]
    ) -> np.ndarray:
        return strategy.select(selection_for(self.n_per_step))

    def label(self, chosen: list[int]) -> None:
        if not chosen:  # baal's label([]) would label the whole pool
            return
        # baal labels by pool position: the rank of the image among the unlabelled ones.
        positions = np.searchsorted(np.flatnonzero(~self.al_set.labelled), chosen)
        self.al_set.label([int(p) for p in positions])

    def describe(self, chosen: list[int], scores: Sequence[float | None]) -> list[dict[str, Any]]:
        return [
            {"name": self.store.names[image], "score": score}
            for image, score in zip(chosen, scores, strict=True)
        ]

    def outlines(self, chosen: list[int]) -> None:
        return None

    def save(self, state: RunState) -> None:
        pass

    def restore(self, state: RunState, stem: str) -> None:
        pass

    def summary(self, acquired: list[dict[str, Any]]) -> str:
        return ", ".join(a["name"] for a in acquired) or "-"


@dataclass
class RegionUnit:
    """Regions (tiles or superpixels): a cycle spends a pixel budget, that of ``n_per_step``
    average images (per grade with ``balance_al``); images are trained on their labelled
    pixels."""

    store: ImageStore
    al_set: ActiveLearningDataset
    regions: RegionLabels
    n_per_step: int
    budget: float | None = None  # pixels per cycle and grade; None: n_per_step average images
    whole_images: bool = False

    def start(self) -> None:
        for image in np.flatnonzero(self.al_set.labelled):
            self.regions.label_image(int(image))

    def n_labelled(self) -> int:
        return len(self.regions.images_with_labels())

    def labelled_pixels(self) -> int:
        return self.regions.labelled_pixels()

    def training_data(self, patch: tuple[int, int]) -> Dataset:
        mean_image_pixels = int(self.store.pixels.sum()) / len(self.store)
        transform = train_transform(patch, crop=False)
        return PartialMaskDataset(self.store, self.regions, patch, transform, mean_image_pixels)

    def annotated(self, image: int) -> torch.Tensor | None:
        mask = self.regions.annotated(image)
        return torch.from_numpy(mask) if mask.any() else None

    def unlabelled_images(self) -> list[int]:
        return sorted({image for image, _ in self.regions.pool()})

    def pool(self) -> list[tuple[int, int]]:
        return self.regions.pool()

    def score(
        self,
        mc_model: nn.Module,
        settings: MCSettings,
        options: PassOptions,
        on_probs: ProbsSink | None,
    ) -> Scored:
        result = score_regions(mc_model, self.store, self.regions, settings, options, on_probs)
        maps = {self.store.names[image]: pair for image, pair in result.maps.items()}
        return Scored(result.regions, result.scores, result.features, maps)

    def features(
        self,
        model: nn.Module,
        items: list[tuple[int, int]],
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        labelled = [(i, t) for i, tiles in enumerate(self.regions.labelled) for t in sorted(tiles)]
        pool, labelled_features = (
            region_features(model, self.store, self.regions, group, device, dtype)
            for group in (items, labelled)
        )
        return pool, labelled_features

    def grades(self, items: list[tuple[int, int]]) -> np.ndarray:
        return self.store.labels[[image for image, _ in items]]

    def select(
        self,
        strategy: Strategy,
        selection_for: Callable[[int], Selection],
        items: list[tuple[int, int]],
    ) -> np.ndarray:
        budget = self.budget
        if budget is None:
            budget = self.n_per_step * self.regions.total_pixels() / len(self.regions.shapes)
        costs = np.array([self.regions.area(region) for region in items], dtype=np.float64)
        return select_within_budget(strategy, selection_for, costs, budget)

    def label(self, chosen: list[tuple[int, int]]) -> None:
        self.regions.label(chosen)

    def describe(
        self, chosen: list[tuple[int, int]], scores: Sequence[float | None]
    ) -> list[dict[str, Any]]:
        return [
            {
                "name": self.store.names[image],
                "region": tile,
                "box": list(self.regions.boxes[image][tile]),
                "score": score,
            }
            for (image, tile), score in zip(chosen, scores, strict=True)
        ]

    def outlines(self, chosen: list[tuple[int, int]]) -> dict[str, np.ndarray] | None:
        if self.regions.segments is None:
            return None
        by_image: dict[int, list[int]] = {}
        for image, index in chosen:
            by_image.setdefault(image, []).append(index)
        return {
            self.store.names[image]: np.isin(self.regions.segments[image], indices)
            for image, indices in by_image.items()
        }

    def save(self, state: RunState) -> None:
        state.regions_digest = self.regions.digest()
        state.labelled_regions = self.regions.to_json(self.store.names)

    def restore(self, state: RunState, stem: str) -> None:
        if state.regions_digest != self.regions.digest():
            raise ResumeError(
                f"{stem}: the superpixels differ from those the interrupted run labelled "
                "(another scikit-image version?); resume where it ran, or pass overwrite=True "
                "to start afresh"
            )
        self.regions.restore(state.labelled_regions, self.store.names)

    def summary(self, acquired: list[dict[str, Any]]) -> str:
        if not acquired:
            return "-"
        n_images = len({a["name"] for a in acquired})
        return f"{counted(len(acquired), 'region')} of {counted(n_images, 'image')}"
