"""MC-dropout inference: test-time Bayesian model averaging and pool scoring.

The pool is scored image by image, on the device, as the MC samples come out of the model: only
one image's ``[1, C, H, W, T]`` probabilities exist at a time, never the whole pool's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from data.regions import RegionLabels
from data.segmentation import ImageStore
from heuristics import PIXEL_MAPS
from heuristics.reductions import REDUCTIONS, ReductionSettings, context_margin, pool_regions
from utils.loop.device import autocast
from utils.loop.metrics import dice_score
from utils.loop.training import to_device

# Sees each pool image's MC probabilities ``[1, C, H, W, T]`` as they are made: (index, probs).
ProbsSink = Callable[[int, torch.Tensor], None]


@dataclass(frozen=True)
class MCSettings:
    mc_iters: int  # T, MC samples per image
    samples_per_pass: int  # image-samples stacked into one forward pass
    device: torch.device
    amp_dtype: torch.dtype | None = None  # None = fp32
    channels_last: bool = True


def _sample_chunks(settings: MCSettings) -> list[int]:
    per_pass = max(1, min(settings.samples_per_pass, settings.mc_iters))
    sizes = [per_pass] * (settings.mc_iters // per_pass)
    return sizes + ([settings.mc_iters % per_pass] if settings.mc_iters % per_pass else [])


@torch.inference_mode()
def mc_probabilities(
    mc_model: nn.Module, image: torch.Tensor, settings: MCSettings, with_features: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities of ``mc_iters`` MC-dropout passes over one image.

    ``image`` ``[3, H, W]`` -> ``[1, C, H, W, T]`` float32 on ``settings.device``. Several samples
    go through the model in one batch: dropout draws a fresh mask per batch element. With
    ``with_features`` also the bottleneck features of the same passes, averaged over the samples:
    ``[D, h, w]`` (h, w = H, W / ``feature_cell``, rounded up).
    """
    x = to_device(image.unsqueeze(0), settings.device, settings.channels_last)  # [1, 3, H, W]
    probs = None
    features = None
    start = 0
    for k in _sample_chunks(settings):
        batch = x.expand(k, -1, -1, -1)  # [k, 3, H, W], a view: no copy of the image
        with autocast(settings.device, settings.amp_dtype):
            if with_features:
                logits, bottleneck = mc_model(batch, return_features=True)  # [k, D, h, w]
                summed = bottleneck.float().sum(0)  # [D, h, w]
                features = summed if features is None else features + summed
            else:
                logits = mc_model(batch)  # [k, C, H, W]
        if probs is None:
            # Filled in place: concatenating chunks would briefly hold the stack twice.
            shape = (1, *logits.shape[1:], settings.mc_iters)
            probs = torch.empty(shape, device=logits.device)  # [1, C, H, W, T]
        probs[0, ..., start : start + k] = logits.float().softmax(1).permute(1, 2, 3, 0)
        start += k
    if with_features:
        return probs, features / settings.mc_iters
    return probs


@torch.inference_mode()
def pooled_features(
    model: nn.Module, dataset: Dataset, device: torch.device, amp_dtype: torch.dtype | None
) -> np.ndarray:
    """Bottleneck features of whole images, dropout off, averaged over positions: ``[N, D]``."""
    model.eval()
    rows = []
    for i in range(len(dataset)):
        image = dataset[i][0]
        with autocast(device, amp_dtype):
            _, bottleneck = model(to_device(image.unsqueeze(0), device), return_features=True)
        rows.append(bottleneck.float().mean((2, 3))[0].cpu().numpy())
    return np.stack(rows).astype(np.float64)


@torch.inference_mode()
def mc_mean_probabilities(
    mc_model: nn.Module, image: torch.Tensor, settings: MCSettings
) -> torch.Tensor:
    """Bayesian model average: mean softmax over ``mc_iters`` passes, ``[C, H, W]``."""
    x = to_device(image.unsqueeze(0), settings.device, settings.channels_last)
    total = None
    for k in _sample_chunks(settings):
        with autocast(settings.device, settings.amp_dtype):
            logits = mc_model(x.expand(k, -1, -1, -1))  # [k, C, H, W]
        summed = logits.float().softmax(1).sum(0)  # [C, H, W]
        total = summed if total is None else total + summed
    return total / settings.mc_iters


def evaluate_bma(
    mc_model: nn.Module, dataset: Dataset, settings: MCSettings, progress: bool = True
) -> dict[str, list[float]]:
    """Per-image Dice of each foreground class (1..C-1) of the MC-averaged prediction over
    whole images: ``{name: [dice of class 1, ...]}``. With two classes, the gland Dice."""
    dice = {}
    items = (dataset[i] for i in range(len(dataset)))
    bar = tqdm(items, total=len(dataset), desc="test", disable=not progress, leave=False)
    for image, mask, _, name in bar:
        probs = mc_mean_probabilities(mc_model, image, settings)  # [C, H, W]
        predicted = probs.argmax(0).cpu()  # [H, W]
        dice[name] = [dice_score(predicted == c, mask == c) for c in range(1, probs.shape[0])]
    return dice


@dataclass(frozen=True)
class PassOptions:
    """How an MC pass over the pool scores it."""

    heuristic: str  # the pixel map to compute (``PIXEL_MAPS``)
    reduction: str = "mean"
    reduction_settings: ReductionSettings = field(default_factory=ReductionSettings)
    with_features: bool = False  # also pool the bottleneck features of each item
    keep_maps: bool = False  # keep each image's maps for the figures
    progress: bool = True


@dataclass
class PoolScores:
    names: list[str]
    scores: np.ndarray  # [N]
    features: np.ndarray | None = None  # [N, D] bottleneck features, when asked for
    # Filled only when asked for figures: name -> (uncertainty [H, W], gland probability [H, W]).
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def score_pool(
    mc_model: nn.Module,
    pool: Dataset,
    settings: MCSettings,
    options: PassOptions,
    on_probs: ProbsSink | None = None,
) -> PoolScores:
    """Score every pool image: the heuristic's pixel map reduced by the reduction.

    Only one image's ``[1, C, H, W, T]`` probabilities exist at a time; features add one
    ``[N, D]`` matrix. ``on_probs`` gets each image's probabilities with its pool position.
    """
    pixel_map_of, reduce = PIXEL_MAPS[options.heuristic], REDUCTIONS[options.reduction]
    reduction_settings, with_features = options.reduction_settings, options.with_features
    names, scores, features, maps = [], [], [], {}
    items = (pool[i] for i in range(len(pool)))
    bar = tqdm(items, total=len(pool), desc="MC pool", disable=not options.progress, leave=False)
    for image, _, _, name in bar:
        output = mc_probabilities(mc_model, image, settings, with_features=with_features)
        probs, feature = output if with_features else (output, None)  # [1, C, H, W, T], [D, h, w]
        if on_probs is not None:
            on_probs(len(names), probs)
        pixel_map = pixel_map_of(probs)  # [1, H, W]
        score = reduce(pixel_map, probs, reduction_settings)  # [1]
        if options.keep_maps:
            gland = 1.0 - probs[:, 0].mean(-1)  # [1, H, W]
            maps[name] = (pixel_map[0].cpu().numpy(), gland[0].cpu().numpy())
        if feature is not None:
            features.append(feature.mean((1, 2)).cpu().numpy())  # [D]
        names.append(name)
        scores.append(float(score))
    stacked = np.stack(features).astype(np.float64) if features else None
    return PoolScores(names, np.asarray(scores, dtype=np.float64), stacked, maps)


@dataclass
class RegionScores:
    regions: list[tuple[int, int]]  # (train image index, tile index), pool order
    scores: np.ndarray  # [R]
    features: np.ndarray | None = None  # [R, D] bottleneck features pooled over each region
    # train image index -> (pixel map [H, W], mean gland probability [H, W]), with keep_maps
    maps: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def score_regions(
    mc_model: nn.Module,
    store: ImageStore,
    labels: RegionLabels,
    settings: MCSettings,
    options: PassOptions,
    on_probs: ProbsSink | None = None,
) -> RegionScores:
    """Score every unlabelled region: one MC pass per image that has any, its pixel map pooled
    over each of its unlabelled regions by the reduction (a superpixel over its own pixels, a
    tile over its box). Memory stays at one image's samples. Features are pooled over each
    region's bounding box. ``on_probs`` gets each image's probabilities with its train index."""
    pixel_map_of, reduce = PIXEL_MAPS[options.heuristic], REDUCTIONS[options.reduction]
    reduction_settings, with_features = options.reduction_settings, options.with_features
    by_image: dict[int, list[int]] = {}
    for image, tile in labels.pool():
        by_image.setdefault(image, []).append(tile)
    regions, scores, features = [], [], []
    maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    bar = tqdm(by_image.items(), desc="MC regions", disable=not options.progress, leave=False)
    for image, tiles in bar:
        picture = store.images[image].float().div(255.0)
        output = mc_probabilities(mc_model, picture, settings, with_features=with_features)
        probs, feature = output if with_features else (output, None)
        if on_probs is not None:
            on_probs(image, probs)
        pixel_map = pixel_map_of(probs)  # [1, H, W]
        if options.keep_maps:
            gland = 1.0 - probs[:, 0].mean(-1)  # [1, H, W]
            maps[image] = (pixel_map[0].cpu().numpy(), gland[0].cpu().numpy())
        boxes = [labels.boxes[image][tile] for tile in tiles]
        masks = [labels.region_mask(image, tile) for tile in tiles]
        masks = [None if m is None else torch.from_numpy(m).to(probs.device) for m in masks]
        scores.append(
            pool_regions(
                pixel_map,
                probs,
                boxes,
                lambda m, p, mask=None: reduce(m, p, reduction_settings, mask=mask),
                masks,
                context_margin(options.reduction, reduction_settings),
            )
        )
        if feature is not None:
            features.append(pool_features(feature, boxes, mc_model.feature_cell))
        regions += [(image, tile) for tile in tiles]
    return RegionScores(
        regions,
        np.concatenate(scores) if scores else np.empty(0),
        np.concatenate(features) if features else None,
        maps,
    )


def pool_features(
    features: torch.Tensor, boxes: list[tuple[int, int, int, int]], cell: int
) -> np.ndarray:
    """Per-box mean of a coarse feature map ``[D, h, w]`` over the cells the box overlaps:
    ``[len(boxes), D]``. Cell (r, c) covers input pixels ``[r*cell, (r+1)*cell)`` on each axis,
    because the model pads the input at the bottom and right, never scales it."""
    rows = []
    for y0, y1, x0, x1 in boxes:
        r0, c0 = y0 // cell, x0 // cell
        r1 = max(r0 + 1, -(-y1 // cell))  # ceil, at least one cell
        c1 = max(c0 + 1, -(-x1 // cell))
        rows.append(features[:, r0:r1, c0:c1].float().mean((1, 2)).cpu().numpy())
    return np.stack(rows).astype(np.float64)


@torch.inference_mode()
def region_features(
    model: nn.Module,
    store: ImageStore,
    labels: RegionLabels,
    regions: list[tuple[int, int]],
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> np.ndarray:
    """Bottleneck features of ``regions`` ((image, tile) pairs), dropout off, each pooled over
    its box: ``[len(regions), D]`` in the order given."""
    model.eval()
    by_image: dict[int, list[int]] = {}
    for position, (image, _) in enumerate(regions):
        by_image.setdefault(image, []).append(position)
    rows: list[np.ndarray] = [np.empty(0)] * len(regions)
    for image, positions in by_image.items():
        picture = store.images[image].float().div(255.0).unsqueeze(0)
        with autocast(device, amp_dtype):
            _, bottleneck = model(to_device(picture, device), return_features=True)
        boxes = [labels.boxes[image][regions[p][1]] for p in positions]
        pooled = pool_features(bottleneck[0], boxes, model.feature_cell)  # [len(boxes), D]
        for position, row in zip(positions, pooled, strict=True):
            rows[position] = row
    return np.stack(rows) if rows else np.empty((0, 0))
