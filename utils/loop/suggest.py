"""Which of my unlabelled images (or regions) should I outline next? (``active.py suggest``)

The images of a ``dataset=folder`` folder that have a mask are the labelled set, those without
one the pool. The UNet is trained on every labelled image with the configured settings (no
validation split is held out, so ``model_selection=val`` keeps the last epoch's weights, as
``last`` does), the pool is scored with the configured heuristic, strategy and label unit, and
``results_dir/suggest/`` gets the ranked suggestions, an overlay per suggestion, a GeoJSON per
image for QuPath and the weights. The weights are reused while the masks, images and training
settings are unchanged; a new mask retrains.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import pickle
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from baal.active import ActiveLearningDataset
from PIL import Image, ImageDraw

from data.device_augment import DeviceAugmenter
from data.folder import UNANNOTATED, FolderIndex, index_folder, load_folder_pair
from data.segmentation import DataError, ImageStore, SegmentationDataset, SplitRow, open_image
from data.transforms import effective_patch_size, train_transform
from heuristics import PIXEL_MAPS
from models import UNet, mc_dropout_copy
from utils.config import ConfigError, ExperimentConfig, validate
from utils.io import (
    atomic_save_json,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    make_results_dir,
    replace_folder,
    staging,
)
from utils.loop.acquisition import AcquisitionSettings, acquire, pass_heuristic
from utils.loop.device import describe_machine, pick_device, resolve_precision, samples_per_pass
from utils.loop.inference import MCSettings, mc_probabilities
from utils.loop.run import check_scaled_size, make_regions, seed_cycle, train_settings
from utils.loop.training import train_model
from utils.loop.units import ImageUnit, LabellingUnit, RegionUnit
from utils.runs.lock import run_lock
from utils.runs.state import machine_changes
from utils.text import counted

# Overlays: panels enlarged until their shorter side has this many pixels, under a title strip.
OVERLAY_MIN_SIDE = 192
OVERLAY_TITLE = 14
OVERLAY_TITLES = ("image", "P(foreground)", "uncertainty (white: highest of this call)")

# Keys that change the scoring or the output only: a change in them reuses the weights. The
# label unit and region settings are not among them: they decide which annotated pixels train.
SCORING_KEYS = frozenset(
    {
        "heuristic",
        "reduction",
        "topq_percent",
        "foreground_band",
        "strategy",
        "temperature",
        "suggestive_factor",
        "n_suggest",
        "balance_al",
        "n_data_to_label",
        "al_cycles",
        "n_label_start",
        "mc_iters",
        "mc_samples_per_pass",
        "results_dir",
        "splits_path",
        "tag",
        "overwrite",
        "progress",
        "save_maps",
        "save_uncerts",
        "full_supervision",
    }
)


def _say(message: str) -> None:
    print(message, flush=True)


def _pool_pair(
    root: Path, num_classes: int, mask_kind: str, unannotated: int, row: SplitRow, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """A labelled image with its mask, or a pool image with an all-background placeholder,
    which nothing trains on."""
    if row.mask:
        return load_folder_pair(root, num_classes, mask_kind, row, scale, unannotated)
    image = open_image(root / row.image, "RGB", "restore it")
    if scale != 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8).copy()
    return pixels, np.zeros(pixels.shape[:2], dtype=np.uint8)


def _fingerprint(cfg: ExperimentConfig, files: dict[str, str], derived: dict[str, Any]) -> str:
    """What the weights depend on: the training settings, the labelled files (``files``: their
    SHA-256 by name, images and masks), and what training reads from the pool too
    (``derived``: the patch, fitted to the smallest image, and in region mode the mean image
    size that sets an epoch's length)."""
    hasher = hashlib.sha256()
    settings = {k: v for k, v in asdict(cfg).items() if k not in SCORING_KEYS}
    del settings["data_path"]  # the files' names and bytes are hashed: a moved folder is the same
    settings["derived"] = derived
    hasher.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, digest in files.items():
        hasher.update(name.encode())
        hasher.update(digest.encode())
    return hasher.hexdigest()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def suggest(cfg: ExperimentConfig) -> Path:
    """Write the suggestions into ``results_dir/suggest/`` and return that folder."""
    cfg = validate(cfg)
    if cfg.dataset != "folder":
        raise ConfigError("suggest works on your own images: run it with dataset=folder")
    if cfg.semi != "none":
        raise ConfigError(
            f"suggest trains on the labelled images only, not with semi={cfg.semi}; run it with "
            "semi=none"
        )
    index = index_folder(cfg.data_path, group_every_image=False)  # the pool is ranked as one
    labelled = sorted(index.masks)
    pool = sorted(set(index.images) - set(index.masks))
    if not labelled:
        raise DataError(
            f"{index.root / 'masks'} holds no masks, so nothing is labelled to learn from; "
            "outline a few images first (masks/NAME.png)"
        )
    if not pool and cfg.unannotated_value < 0:
        raise DataError(f"every image in {index.root / 'images'} has a mask; nothing to suggest")
    device = pick_device(cfg.device)  # before the images load, which can take minutes
    make_results_dir(Path(cfg.results_dir))
    out = Path(cfg.results_dir) / "suggest"
    make_results_dir(out)
    _check_same_folder(out, index)
    rows = [SplitRow(index.images[n], index.masks[n], index.groups[n]) for n in labelled]
    rows += [SplitRow(index.images[n], "", index.groups[n]) for n in pool]
    load = partial(_pool_pair, index.root, cfg.num_classes, cfg.mask_kind, cfg.unannotated_value)
    store = ImageStore(rows, load, cfg.image_scale)
    check_scaled_size({"all": store}, cfg.image_scale)
    partly = [i for i in range(len(labelled)) if bool((store.masks[i] == UNANNOTATED).any())]
    _check_partial_masks(cfg, index.root, [rows[i] for i in partly], pool)
    with run_lock(out / "suggest.lock"):  # one call at a time writes the folder
        return _train_and_rank(cfg, device, out, index, store, rows, len(labelled), partly)


def _train_and_rank(
    cfg: ExperimentConfig,
    device: torch.device,
    out: Path,
    index: FolderIndex,
    store: ImageStore,
    rows: list[SplitRow],
    n_labelled: int,
    partly: list[int],
) -> Path:
    """Train (or reuse the weights), score the pool and write the suggestions into ``out``."""
    amp_dtype = resolve_precision(cfg.precision, device)
    patch = effective_patch_size(tuple(cfg.patch_size), store.min_size)
    al_set = ActiveLearningDataset(
        SegmentationDataset(store, train_transform(patch)), pool_specifics={"transform": None}
    )
    whole = [i for i in range(n_labelled) if i not in partly]
    unit = _labelled_unit(cfg, store, al_set, whole, {i: index.root / rows[i].mask for i in partly})
    taken = {}  # the regions each part-annotated mask labels
    if isinstance(unit, RegionUnit):
        taken = {store.names[i]: sorted(unit.regions.labelled[i]) for i in partly}
    # In region mode the unlabelled regions of part-annotated images are ranked too.
    ranked = counted(len(unit.pool()), "region" if isinstance(unit, RegionUnit) else "image")
    _say(
        f"{counted(n_labelled, 'labelled image')} in {index.root}, {ranked} to rank; "
        f"device {device}, precision {amp_dtype or torch.float32}"
    )
    torch.manual_seed(cfg.run)
    model = UNet(3, cfg.num_classes, cfg.base_width, dropout=cfg.dropout)
    model = model.to(device, memory_format=torch.channels_last)
    _trained_model(cfg, model, unit, store, patch, device, amp_dtype, out, rows[:n_labelled], taken)

    mc_settings = MCSettings(
        cfg.mc_iters, samples_per_pass(cfg.mc_samples_per_pass, device), device, amp_dtype
    )
    mc_model = mc_dropout_copy(model)
    # Scoring draws dropout masks: seeded here, so loaded and freshly trained weights score alike.
    seed_cycle(cfg.run, 1)
    scoring = replace(cfg, balance_al=False, save_maps=False, save_uncerts=False)
    settings = AcquisitionSettings.from_config(scoring, device, amp_dtype, out / "maps")
    available = len(unit.pool())
    picks = acquire(unit, settings, model, mc_model, mc_settings, 0)
    sizes = {p["name"]: _original_size(index.root / index.images[p["name"]]) for p in picks}
    write_suggestions(cfg, out, store, picks, mc_model, mc_settings, sizes)
    message = f"wrote {counted(len(picks), 'suggestion')} to {out / 'suggestions.csv'}"
    if 0 < len(picks) < cfg.n_suggest and len(picks) == available:
        message += f" (n_suggest={cfg.n_suggest}, but the pool holds no more)"
    elif isinstance(unit, RegionUnit) and len(picks) < min(cfg.n_suggest, available):
        # Regions differ in size (edge tiles take an image's remainder; superpixels vary).
        position = {name: i for i, name in enumerate(store.names)}
        covered = sum(unit.regions.area((position[p["name"]], p["region"])) for p in picks)
        message += (
            f"; in region mode n_suggest={cfg.n_suggest} is a budget of {unit.budget:,.0f} "
            f"pixels, filled in rank order until the next region would overrun it, and "
            f"{'this region covers' if len(picks) == 1 else 'these regions cover'} {covered:,}"
        )
    _say(message)
    return out


def _labelled_unit(
    cfg: ExperimentConfig,
    store: ImageStore,
    al_set: ActiveLearningDataset,
    whole: list[int],
    partly: dict[int, Path],
) -> LabellingUnit:
    """The unit suggest scores with, holding what is labelled: the images annotated whole and,
    in region mode, each region of a part-annotated image (``partly``: image -> its mask)
    whose every pixel is annotated."""
    unit: LabellingUnit = ImageUnit(store, al_set, cfg.n_suggest)
    unit.label(whole)
    if cfg.label_unit == "image":
        return unit
    regions = make_regions(cfg, store)
    # n_suggest regions' worth of pixels: suggestions are tiles of region_size.
    budget = cfg.n_suggest * regions.tile[0] * regions.tile[1]
    unit = RegionUnit(store, al_set, regions, cfg.n_suggest, budget=budget)
    unit.start()
    setting = f"region_size={cfg.region_size} at image_scale={cfg.image_scale}"
    taken = 0
    for image, mask in partly.items():
        annotated = store.masks[image].numpy() != UNANNOTATED
        covered = regions.covered(image, annotated)
        regions.label([(image, region) for region in covered])
        taken += len(covered)
        if not covered:  # the pathologist's work would be lost unseen
            _say(f"warning: {mask} annotates no region of {setting} whole, so it is not used")
    if not regions.images_with_labels():
        raise DataError(
            f"no region of {setting} is annotated whole in {next(iter(partly.values())).parent}; "
            "annotate each suggested box whole, with the settings that suggested it"
        )
    if partly:
        _say(
            f"labelled: {counted(len(whole), 'image')} whole, {counted(taken, 'region')} of "
            f"{counted(len(partly), 'partial mask')}"
        )
    return unit


def _check_partial_masks(
    cfg: ExperimentConfig, root: Path, partly: list[SplitRow], pool: list[str]
) -> None:
    if partly and cfg.label_unit != "region":
        raise DataError(
            f"{root / partly[0].mask} leaves pixels unannotated (value {cfg.unannotated_value}); "
            "use label_unit=region to learn from part of an image, or annotate it whole"
        )
    if not partly and not pool:
        raise DataError(f"every image in {root / 'images'} is annotated whole; nothing to suggest")


def _read_manifest(out: Path) -> dict[str, Any] | None:
    """``out/model.json``, or None without one; one line when it is damaged."""
    manifest = out / "model.json"
    if not manifest.is_file():
        return None
    try:
        saved = json.loads(manifest.read_text())
        readable = isinstance(saved, dict)
    except (OSError, ValueError):
        readable = False
    if not readable:
        raise DataError(f"{manifest} is unreadable; delete {out} to suggest afresh")
    return saved


def _check_same_folder(out: Path, index: FolderIndex) -> None:
    """One results folder serves one data folder: another folder's suggestions are kept.

    A folder that was moved or renamed is the same one: its saved path is gone, and every image
    labelled there is in ``index`` with the same bytes (masks may have changed since)."""
    saved = _read_manifest(out)
    if saved is None:
        return
    other = saved.get("data_path")
    if other is None or other == str(index.root.resolve()):
        return
    before = saved.get("labelled_images")
    moved = (
        not Path(other).exists()
        and isinstance(before, dict)
        and bool(before)
        and all(
            name in index.images and _digest(index.root / index.images[name]) == digest
            for name, digest in before.items()
        )
    )
    if not moved:
        raise ConfigError(
            f"{out} holds the suggestions for {other}; set results_dir to another folder for "
            f"{index.root}, or delete {out}"
        )
    _say(f"{other} is gone and {index.root} holds its labelled images: taking it as moved there")


def _original_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header."""
    with Image.open(path) as image:
        return image.height, image.width


def _trained_model(
    cfg: ExperimentConfig,
    model: UNet,
    unit: LabellingUnit,
    store: ImageStore,
    patch: tuple[int, int],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    out: Path,
    labelled_rows: list[SplitRow],
    taken: dict[str, list[int]],
) -> None:
    """Load the saved weights when they were trained on the same labels and settings, else
    train and save them."""
    derived: dict[str, Any] = {"patch": list(patch)}
    if isinstance(unit, RegionUnit):
        derived["image_pixels"] = [int(store.pixels.sum()), len(store)]
    root = Path(cfg.data_path)
    files = {name: _digest(root / name) for r in labelled_rows for name in (r.image, r.mask)}
    fingerprint = _fingerprint(cfg, files, derived)
    weights, manifest = out / "model.pt", out / "model.json"
    machine = describe_machine(device, amp_dtype)
    why = f"no {manifest.name} beside {weights.name}" if weights.exists() else "no saved weights"
    saved = _read_manifest(out)
    if weights.exists() and saved is not None:
        why = "the masks, images or training settings changed"
        if "labelled_images" not in saved:  # its fingerprint still holds the folder's path
            why = f"{manifest.name} was written by an older version of suggest"
        reuse = saved.get("fingerprint") == fingerprint
        if reuse:
            initial = {k: v.clone() for k, v in model.state_dict().items()}
            try:
                model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
            except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
                # A failed load may have copied some tensors: train from the seeded start.
                model.load_state_dict(initial)
                lines = [line.strip() for line in str(err).splitlines() if line.strip()]
                reason = " ".join(lines[:2]) or type(err).__name__
                why, reuse = f"{weights.name} does not load: {reason}", False
        if reuse:
            _say(f"labels and settings unchanged: reusing {weights}")
            if saved.get("data_path") != str(root.resolve()):  # the folder moved
                atomic_save_json(manifest, {**saved, "data_path": str(root.resolve())})
            # Training here would give other weights, hence other suggestions than a fresh run
            # on this machine; weights saved before manifests named their machine are not judged.
            before = saved.get("machine")
            changed = machine_changes([before], machine) if isinstance(before, dict) else []
            if changed:
                _say(
                    f"these weights were trained on another setup ({'; '.join(changed)}); "
                    f"delete {weights} to train them here"
                )
            return
    _say(f"training for {counted(cfg.epochs, 'epoch')} ({why})")
    generator = seed_cycle(cfg.run, 0)
    labelled = np.flatnonzero(unit.al_set.labelled)
    on_device = cfg.augment_on == "device" or (cfg.augment_on == "auto" and device.type == "cuda")
    augmenter = (
        DeviceAugmenter(
            [store.images[i] for i in labelled],
            [store.masks[i] for i in labelled],
            patch,
            device,
            generator,
        )
        if on_device and unit.whole_images
        else None
    )
    train_model(
        model,
        unit.training_data(patch),
        None,  # every labelled image trains; none is held out to choose weights by
        train_settings(cfg),
        device,
        amp_dtype,
        generator,
        progress=cfg.progress,
        description=f"suggest train ({unit.n_labelled()} labelled)",
        augmenter=augmenter,
        ema=cfg.model_selection == "ema",
    )
    manifest.unlink(missing_ok=True)  # a crash before the new one is written leaves no match
    atomic_write(weights, lambda f: torch.save(model.state_dict(), f))
    atomic_save_json(
        manifest,
        {
            "fingerprint": fingerprint,
            "data_path": str(root.resolve()),
            "labelled": [r.name for r in labelled_rows],
            "labelled_images": {r.name: files[r.image] for r in labelled_rows},
            "regions_of_partial_masks": taken,
            "machine": machine,
        },
    )


def write_suggestions(
    cfg: ExperimentConfig,
    out: Path,
    store: ImageStore,
    picks: list[dict[str, Any]],
    mc_model: torch.nn.Module,
    mc_settings: MCSettings,
    original_sizes: dict[str, tuple[int, int]],
) -> None:
    """``suggestions.csv``, ``overlays/RANK_NAME.png`` and ``geojson/NAME.geojson``; boxes in
    the original images' pixels (``original_sizes``: ``(height, width)`` by name).

    The overlays and GeoJSON are written into a staging folder and each folder replaces the
    last call's whole, the table last: a call cut short while it computes them leaves the last
    call's suggestions as they were (the weights, saved before scoring, are this call's).
    """
    regions = cfg.label_unit == "region"
    position = {name: i for i, name in enumerate(store.names)}
    header = ["rank", "image", "score"] + (["region", "y0", "y1", "x0", "x1"] if regions else [])
    lines, features = [header], {}
    digits = max(2, len(str(len(picks))))  # file names sort by rank, also past 99
    maps = {
        name: _maps(mc_model, store.images[position[name]], cfg.heuristic, mc_settings)
        for name in dict.fromkeys(pick["name"] for pick in picks)
    }
    # One scale for every overlay of the call, so a darker panel means a less uncertain image.
    top = max((float(uncertainty.max()) for _, uncertainty in maps.values()), default=0.0)
    with staging(out / ".staged") as staged:
        for folder in ("overlays", "geojson"):
            (staged / folder).mkdir()
        for rank, pick in enumerate(picks, start=1):
            name = pick["name"]
            image = store.images[position[name]]
            height, width = image.shape[1:]
            box = pick.get("box", [0, height, 0, width])
            full = _original_box(box, (height, width), original_sizes[name])  # y0, y1, x0, x1
            score = "" if pick["score"] is None else f"{pick['score']:.6g}"
            lines.append([rank, name, score] + ([pick["region"], *full] if regions else []))
            path = staged / "overlays" / f"{rank:0{digits}d}_{name}.png"
            _save_overlay(path, image, maps[name], box, top)
            features.setdefault(name, []).append(_geojson_box(full, rank, pick["score"]))
        for name, items in features.items():
            collection = {"type": "FeatureCollection", "features": items}
            atomic_save_json(staged / "geojson" / f"{name}.geojson", collection)
    for folder in ("overlays", "geojson"):
        replace_folder(staged / folder, out / folder)
    staged.rmdir()
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    atomic_write_text(out / "suggestions.csv", buffer.getvalue())


def _geojson_box(box: list[int], rank: int, score: float | None) -> dict[str, Any]:
    """A suggestion's ``[y0, y1, x0, x1]`` box as a QuPath annotation (x, y vertices)."""
    y0, y1, x0, x1 = box
    return {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
        },
        "properties": {
            "objectType": "annotation",
            "name": f"suggestion {rank}",
            "rank": rank,
            "score": score,
        },
    }


def _original_box(box: list[int], scaled: tuple[int, int], original: tuple[int, int]) -> list[int]:
    """A ``[y0, y1, x0, x1]`` box on the scaled image in the original image's pixels.

    Starts round down and ends round up, so that the box holds every original pixel that the
    scaled mask's nearest-neighbour resize reads inside the scaled box: a mask annotated over
    exactly this box then labels the region whole, enlarged as well as reduced.
    """
    (height, width), (full_height, full_width) = scaled, original
    sides = [(height, full_height)] * 2 + [(width, full_width)] * 2
    rounding = [math.floor, math.ceil] * 2
    return [
        min(round_to(value * full / side), full)
        for value, (side, full), round_to in zip(box, sides, rounding, strict=True)
    ]


def _maps(
    mc_model: torch.nn.Module, image: torch.Tensor, heuristic: str, settings: MCSettings
) -> tuple[np.ndarray, np.ndarray]:
    """(mean foreground probability, uncertainty) ``[H, W]`` of one image."""
    probs = mc_probabilities(mc_model, image.float().div(255.0), settings)  # [1, C, H, W, T]
    pixel_map = PIXEL_MAPS[pass_heuristic(heuristic)](probs)
    foreground = 1.0 - probs[0, 0].mean(-1)
    return foreground.cpu().numpy(), pixel_map[0].float().cpu().numpy()


def _save_overlay(
    path: Path,
    image: torch.Tensor,
    maps: tuple[np.ndarray, np.ndarray],
    box: list[int],
    top: float,
) -> None:
    """Image, mean prediction and uncertainty side by side under their titles, the suggestion
    outlined in each; uncertainty ``top`` is white. Small images are enlarged by whole pixels
    (each pixel a square block) so that a region stays visible."""
    foreground, uncertainty = maps
    scaled = np.clip(uncertainty / top, 0.0, 1.0) if top > 0 else np.zeros_like(uncertainty)
    panels = [
        image.permute(1, 2, 0).numpy(),
        np.repeat((foreground * 255).astype(np.uint8)[..., None], 3, axis=2),
        np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=2),
    ]
    zoom = max(1, math.ceil(OVERLAY_MIN_SIDE / min(panels[0].shape[:2])))
    panels = [panel.repeat(zoom, axis=0).repeat(zoom, axis=1) for panel in panels]
    height, width = panels[0].shape[:2]
    canvas = Image.new("RGB", (3 * width + 8, OVERLAY_TITLE + height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y0, y1, x0, x1 = (zoom * v for v in box)
    for i, (panel, title) in enumerate(zip(panels, OVERLAY_TITLES, strict=True)):
        left = i * (width + 4)
        draw.text((left + 2, 2), title, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(panel), (left, OVERLAY_TITLE))
        draw.rectangle(
            [left + x0, OVERLAY_TITLE + y0, left + x1 - 1, OVERLAY_TITLE + y1 - 1],
            outline=(255, 0, 0),
        )
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
