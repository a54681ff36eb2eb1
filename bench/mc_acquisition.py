"""Benchmark of MC-dropout acquisition scoring (BALD) over a pool of whole GlaS-size images.

    python bench/mc_acquisition.py [--n 16] [--t 20] [--height 522] [--width 775]
        [--data-path DIR] [--samples-per-pass K] [--precision auto|bf16|fp32] [--features]
        [--paths project,naive,baal,region] [--region-size H W]

``--features`` makes the project path also pool the bottleneck features that the ``suggestive``
and ``coreset`` strategies use (one more ``[N, D]`` matrix), so that peak memory against pool
size can be compared with and without them.

Four paths score the same pool with the same UNet weights, each in its own fresh subprocess
(so that its peak RSS is its own), with the same torch seed:

* ``project``: ``utils.loop.inference.score_pool`` on ``mc_dropout_copy(model)`` as active.py
  calls it (GlasDataset without transform over an ImageStore, model in channels_last, T samples
  stacked ``samples_per_pass`` per forward pass, autocast per ``resolve_precision``, BALD scored on
  the device image by image).
* ``naive``: batch 1, the T passes one after another in fp32 NCHW under ``torch.no_grad``; every
  image's ``[C, H, W, T]`` probabilities kept as numpy for the whole pool, BALD afterwards with
  scipy (softmax, xlogy) and mean reduction.
* ``baal``: baal's own ``ModelWrapper.predict_on_dataset_generator`` (batch 1, workers 0, baal's
  default ``replicate_in_memory=True``: one pass of batch T) and
  ``baal.active.heuristics.BALD(reduction="mean")`` on the softmax of its outputs;
  ``--baal-no-replicate`` makes it T passes of batch 1.
* ``region``: region labelling's ``utils.loop.inference.score_regions`` over every ``--region-size``
  tile of every pool image (one MC pass per image, the pixel map pooled per tile), each image's
  tiles then recombined by area so that its scores line up with the other paths'. Same seed and
  the same draws as ``project``, so with the mean reduction the two agree to rounding:
  ``region_max_rel_err``. ``region_time_ratio`` is its wall time over ``project``'s.
* ``project_seed+1`` (skip with ``--no-noise-floor``): the project path again with the next
  seed. Its agreement with ``project`` is the MC-noise floor: two paths that compute the same
  thing can agree no better than one path with itself under fresh dropout masks.

Only inference + scoring is timed; data loading and model construction happen in the worker
before the clock starts (so they count towards its peak RSS, equally for every path). The first
pass over each image size (oneDNN primitive creation) is inside the clock for every path.

The UNet (base width 16, dropout 0.1) is trained for ``--train-epochs`` epochs (default 3)
with the project's own ``train_model`` on random crops of the pool, so that its scores carry
structure rather than pure MC noise (a random-weight UNet's BALD ranking changed from seed to
seed, ``bench/README.md``). The trained weights are saved to a temp file that every worker loads.

Four correctness checks; a missed target makes the script exit with status 1:

* ``precision``: the project path in bf16 against the project path in fp32, same weights, same
  seed, so the same masks; only the arithmetic differs. ``precision_spearman`` is the Spearman
  correlation of their BALD scores (target >= 0.99).
* ``pipeline``: dropout off (every ``Dropout2d`` at p=0), the project path (``min(10, T)``
  samples stacked per pass, channels_last, fp32, scored on the device) against the naive
  reference, max-entropy scores. With no randomness left the two must agree to rounding:
  ``pipeline_max_rel_err`` is the largest relative difference over the pool (target <= 1e-4).
* ``dropout``: under dropout, the project path in fp32 against the naive path, when the project
  path takes one sample per pass (the CPU default): both read the pool in order and draw one
  mask per pass from the same seeded generator, so they draw the same masks and
  ``dropout_max_rel_err`` must also be rounding (target <= 1e-4). With samples stacked (a GPU's
  default) the masks are drawn in another order, and the check is ``nan``.
* ``region``: the region path's tile scores recombined by area against the project path's image
  scores, same seed and masks: ``region_max_rel_err`` (target <= 1e-4).

Last line: ``RESULT speedup_vs_naive=.. speedup_vs_baal=.. peak_rss_ratio_vs_naive=..
precision_spearman=.. pipeline_max_rel_err=.. dropout_max_rel_err=.. region_time_ratio=..
region_max_rel_err=..`` (throughput ratios project/naive and project/baal, peak-RSS ratio
project/naive, the first three checks above, the region path's time over the project path's,
and the region check).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench._common import (  # noqa: E402
    active_defaults,
    busy_cpu_percent,
    emit,
    machine_summary,
    make_synthetic_pool,
    peak_rss_mb,
    pool_rows,
    run_worker,
)
from data.glas import GlasDataset, ImageStore  # noqa: E402
from models.unet import UNet  # noqa: E402

PATHS = ("project", "naive", "baal", "region")
N_CLASSES, BASE_WIDTH, DROPOUT = 2, 16, 0.1


# --------------------------------------------------------------------------------------------
# Shared setup (parent and workers)


def new_model(state_path: str | None = None) -> UNet:
    torch.manual_seed(0)
    model = UNet(3, N_CLASSES, base_width=BASE_WIDTH, dropout=DROPOUT)
    if state_path is not None:
        model.load_state_dict(torch.load(state_path, weights_only=True))
    return model.eval()


def train_briefly(model: UNet, store: ImageStore, epochs: int, device: str) -> None:
    """A few epochs of the project's own training on 128x128 crops of the pool."""
    from data.transforms import train_transform
    from utils.loop.device import pick_device
    from utils.loop.training import TrainSettings, train_model

    settings = TrainSettings(
        epochs=epochs,
        batch_size=8,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        lr_step_size=max(epochs, 1),
        lr_gamma=0.1,
        repeats_per_epoch=4,
    )
    target = pick_device(device)
    model.to(target, memory_format=torch.channels_last)
    val = ImageStore.__new__(ImageStore)  # two pool images as the validation set
    val.rows, val.names, val.labels = store.rows[:2], store.names[:2], store.labels[:2]
    val.images, val.masks = store.images[:2], store.masks[:2]
    train_model(
        model,
        GlasDataset(store, train_transform((128, 128))),
        GlasDataset(val),
        settings,
        target,
        None,
        torch.Generator().manual_seed(0),
        progress=False,
    )
    model.cpu().eval()


def without_dropout(model: UNet) -> UNet:
    for module in model.modules():
        if isinstance(module, nn.Dropout2d):
            module.p = 0.0
    return model


def load_store(config: dict[str, Any]) -> ImageStore:
    return ImageStore(config["data_path"], pool_rows(config["data_path"], config["n"]))


# --------------------------------------------------------------------------------------------
# The three measured paths (run inside workers)


def _mc_setup(config: dict[str, Any], model: UNet) -> tuple[nn.Module, Any]:
    """The MC copy and settings exactly as utils.loop.run makes them."""
    from models.mc_dropout import mc_dropout_copy
    from utils.loop.device import pick_device, resolve_precision
    from utils.loop.inference import MCSettings

    device = pick_device(config["device"])
    channels_last = config["channels_last"]
    # As in utils.loop.run: the model lives in channels_last on the device.
    model = (
        model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    )
    settings = MCSettings(
        config["t"],
        config["samples_per_pass"],
        device,
        resolve_precision(config["precision"], device),
        channels_last=channels_last,
    )
    return mc_dropout_copy(model), settings


def score_project(config: dict[str, Any], store: ImageStore, model: UNet) -> np.ndarray:
    """active.py's path: utils.loop.inference.score_pool with active.py's settings."""
    from utils.loop.inference import PassOptions, score_pool

    mc_model, settings = _mc_setup(config, model)
    pool = GlasDataset(store)  # transform=None: whole, unaugmented images, as the AL pool
    heuristic, features = config["heuristic"], config["features"]

    def run() -> np.ndarray:
        options = PassOptions(heuristic, with_features=features, progress=False)
        return score_pool(mc_model, pool, settings, options).scores

    return _timed(config, run)


def score_region(config: dict[str, Any], store: ImageStore, model: UNet) -> np.ndarray:
    """Region labelling's path: utils.loop.inference.score_regions over every tile of every pool
    image (``region_size``), then each image's tiles recombined, weighted by their area. With
    the mean reduction that is the image's own score, so the path compares with the others."""
    from data.regions import RegionLabels, box_area
    from utils.loop.inference import PassOptions, score_regions

    mc_model, settings = _mc_setup(config, model)
    tile = tuple(config["region_size"])
    regions = RegionLabels([tuple(image.shape[1:]) for image in store.images], tile)
    heuristic, features = config["heuristic"], config["features"]

    def run() -> np.ndarray:
        options = PassOptions(heuristic, with_features=features, progress=False)
        result = score_regions(mc_model, store, regions, settings, options)
        images = np.array([image for image, _ in result.regions])
        areas = np.array([box_area(regions.boxes[i][t]) for i, t in result.regions], float)
        return np.bincount(images, result.scores * areas) / np.bincount(images, areas)

    return _timed(config, run)


def bald_numpy(probs: np.ndarray) -> float:
    """BALD of one image's ``[C, H, W, T]`` probabilities, mean over pixels (numpy/scipy)."""
    from scipy.special import xlogy

    expected_entropy = -xlogy(probs, probs).sum(0).mean(-1)  # [H, W]
    mean = probs.mean(-1)  # [C, H, W]
    entropy_of_mean = -xlogy(mean, mean).sum(0)  # [H, W]
    return float((entropy_of_mean - expected_entropy).mean())


def entropy_numpy(probs: np.ndarray) -> float:
    """Max entropy of one image's ``[C, H, W, T]`` probabilities, mean over pixels."""
    from scipy.special import xlogy

    mean = probs.mean(-1)  # [C, H, W]
    return float(-xlogy(mean, mean).sum(0).mean())


def score_naive(config: dict[str, Any], store: ImageStore, model: UNet) -> np.ndarray:
    """Textbook reference: batch 1, T sequential fp32 NCHW passes, whole pool kept, numpy BALD."""
    from scipy.special import softmax

    from models.mc_dropout import mc_dropout_copy

    device = _device(config)
    mc_model = mc_dropout_copy(model.to(device))
    pool = GlasDataset(store)

    def run() -> np.ndarray:
        stacks = []  # one [C, H, W, T] float32 array per image, all alive until scoring
        with torch.no_grad():
            # Indexed as the project path reads the pool: a DataLoader would draw its base seed
            # from the generator first, so the two would draw other dropout masks.
            for index in range(len(pool)):
                x = pool[index][0].unsqueeze(0).to(device)  # [1, 3, H, W]
                logits = [mc_model(x)[0].cpu().numpy() for _ in range(config["t"])]
                stacks.append(softmax(np.stack(logits, axis=-1), axis=0))
        score = entropy_numpy if config["heuristic"] == "entropy" else bald_numpy
        return np.array([score(probs) for probs in stacks])

    return _timed(config, run)


class WholeImages(torch.utils.data.Dataset):
    """(image float32 [3, H, W], mask int64 [H, W]) pairs, the form baal's wrapper expects."""

    def __init__(self, store: ImageStore):
        self.images = GlasDataset(store)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask, _, _ = self.images[index]
        return image, mask


def score_baal(config: dict[str, Any], store: ImageStore, model: UNet) -> np.ndarray:
    """baal's ModelWrapper MC prediction generator + baal's BALD (mean reduction)."""
    from baal.active.heuristics import BALD
    from baal.bayesian.dropout import patch_module
    from baal.modelwrapper import ModelWrapper, TrainingArgs
    from scipy.special import softmax

    use_cuda = _device(config).type == "cuda"
    mc_model = patch_module(model.cuda() if use_cuda else model, inplace=True)
    args = TrainingArgs(
        criterion=nn.CrossEntropyLoss(),  # required by the wrapper, unused for prediction
        batch_size=1,  # GlaS images differ in size, so they cannot be collated into batches
        use_cuda=use_cuda,
        workers=0,  # data are in memory; worker processes would only compete for the 2 cores
        replicate_in_memory=config["baal_replicate"],
    )
    wrapper = ModelWrapper(mc_model, args)
    dataset = WholeImages(store)

    def run() -> np.ndarray:
        predictions = wrapper.predict_on_dataset_generator(
            dataset, iterations=config["t"], verbose=False
        )  # yields logits [1, C, H, W, T] per image
        # baal's BALD takes xlogy of its input, so it needs probabilities; its own to_prob
        # guesses from the value range whether to softmax, so we apply the softmax explicitly.
        probabilities = (softmax(logits, axis=1) for logits in predictions)
        return BALD(reduction="mean").get_uncertainties_generator(probabilities)

    return _timed(config, run)


SCORERS = {
    "project": score_project,
    "naive": score_naive,
    "baal": score_baal,
    "region": score_region,
}


def _device(config: dict[str, Any]) -> torch.device:
    from utils.loop.device import pick_device

    return pick_device(config["device"])


def _cpu_seconds() -> float:
    user, system = os.times()[:2]  # this process, all threads
    return user + system


def _timed(config: dict[str, Any], run: Any) -> np.ndarray:
    """Seed, run, time; wall and CPU seconds go into ``config['wall_s']``, ``config['cpu_s']``."""
    cuda = _device(config).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # Same seed in every path: the project path at one sample per pass and the naive path draw
    # the same masks; baal and stacked passes draw them in another order.
    torch.manual_seed(config["seed"])
    # Imports (torch, baal) and the loaded pool make a fixed baseline of about 1 GB; what the
    # path itself adds on top of it is what grows, or not, with the pool.
    config["rss_before_mb"] = peak_rss_mb()
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    scores = np.asarray(run(), dtype=np.float64)
    if cuda:
        torch.cuda.synchronize()
    config["wall_s"] = time.perf_counter() - started
    config["cpu_s"] = _cpu_seconds() - cpu_started
    return scores


def worker(name: str, config: dict[str, Any]) -> None:
    store = load_store(config)  # loaded in the worker so that it counts in every path's RSS
    model = new_model(config["state_path"])
    if config["dropout_off"]:
        model = without_dropout(model)
    scores = SCORERS[name](config, store, model)
    path = Path(config["scores_dir"]) / f"{name}_seed{config['seed']}.npy"
    np.save(path, scores)
    result = {key: config[key] for key in ("wall_s", "cpu_s", "rss_before_mb")}
    result |= {"name": name, "peak_rss_mb": peak_rss_mb(), "scores": str(path)}
    if _device(config).type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    emit(result)


# --------------------------------------------------------------------------------------------
# Parent: data, model, workers, table


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Fraction of the k highest-scoring images of ``a`` that are also in ``b``'s top k."""
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16, help="pool images")
    parser.add_argument("--t", type=int, default=20, help="MC samples per image")
    parser.add_argument("--height", type=int, default=522, help="synthetic image height")
    parser.add_argument("--width", type=int, default=775, help="synthetic image width")
    parser.add_argument("--data-path", help="real GlaS folder (default: synthetic in a temp dir)")
    parser.add_argument("--samples-per-pass", type=int, help="default: active.py's config")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), help="project path")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (all paths)")
    parser.add_argument(
        "--no-channels-last", action="store_true", help="project path in NCHW (a lever to test)"
    )
    parser.add_argument(
        "--baal-no-replicate", action="store_true", help="baal: replicate_in_memory=False"
    )
    parser.add_argument(
        "--no-noise-floor", action="store_true", help="skip the project rerun with seed+1"
    )
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset")
    parser.add_argument(
        "--region-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="region path's tiles (default: active.py's region_size)",
    )
    parser.add_argument("--seed", type=int, default=0, help="torch seed inside every worker")
    parser.add_argument("--train-epochs", type=int, default=3, help="training before scoring")
    parser.add_argument(
        "--features",
        action="store_true",
        help="project path also pools bottleneck features (suggestive, coreset)",
    )
    parser.add_argument("--no-checks", action="store_true", help="skip the correctness checks")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(args.config))
        return
    defaults = active_defaults()
    from utils.loop.device import pick_device, samples_per_pass

    # active.py's 0 means "auto": resolve it exactly as the experiment does on this device.
    spp = args.samples_per_pass or samples_per_pass(
        defaults["mc_samples_per_pass"], pick_device(args.device)
    )
    precision = args.precision or defaults["precision"]
    paths = [p for p in args.paths.split(",") if p]
    if unknown := set(paths) - set(PATHS):
        raise SystemExit(f"unknown paths {sorted(unknown)}; choose from {PATHS}")

    with tempfile.TemporaryDirectory(prefix="bench_mc_") as tmp:
        started = time.perf_counter()
        data_path = args.data_path or str(
            make_synthetic_pool(Path(tmp) / "glas", args.n, args.height, args.width)
        )
        config = {
            "data_path": data_path,
            "n": args.n,
            "t": args.t,
            "samples_per_pass": spp,
            "precision": precision,
            "device": args.device,
            "channels_last": not args.no_channels_last,
            "baal_replicate": not args.baal_no_replicate,
            "seed": args.seed,
            "state_path": str(Path(tmp) / "unet.pt"),
            "scores_dir": tmp,
            "heuristic": "bald",
            "dropout_off": False,
            "features": args.features,
            "region_size": args.region_size or defaults["region_size"],
        }
        store = load_store(config)
        model = new_model()
        train_briefly(model, store, args.train_epochs, args.device)
        torch.save(model.state_dict(), config["state_path"])
        del store, model
        sizes = sorted({tuple(im.shape[1:]) for im in load_store(config).images})
        print(f"machine: {machine_summary()}")
        print(
            f"pool: {args.n} images {sizes} from {args.data_path or 'synthetic'}, T={args.t}, "
            f"project: samples_per_pass={spp}, precision={precision}, "
            f"channels_last={not args.no_channels_last}; baal replicate_in_memory="
            f"{not args.baal_no_replicate}; setup {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        runs = [(name, name, config) for name in paths]
        if "project" in paths and not args.no_noise_floor:
            runs.append(("project_seed+1", "project", config | {"seed": args.seed + 1}))
        if not args.no_checks:
            checks = {
                "dropout_off": True,
                "precision": "fp32",
                "heuristic": "entropy",
                "samples_per_pass": min(10, args.t),  # stacking, which a CPU run would not use
            }
            runs += [
                ("precision_fp32", "project", config | {"precision": "fp32"}),
                ("precision_bf16", "project", config | {"precision": "bf16"}),
                ("pipeline_project", "project", config | checks),
                ("pipeline_naive", "naive", config | checks),
            ]
        results = {}
        for label, name, worker_config in runs:
            busy = busy_cpu_percent()
            result = run_worker(Path(__file__), name, worker_config)
            result["scores"] = np.load(result["scores"])
            result["busy_before"] = busy
            results[label] = result
            print(f"  {label}: {result['wall_s']:.1f}s (CPU busy before: {busy:.0f}%)", flush=True)

    failed = print_table(results, args.n, args.t, spp)
    if failed:
        raise SystemExit(f"check failed: {'; '.join(failed)}")


# The correctness checks' targets: a value on the wrong side fails the run.
CHECK_TARGETS = {
    "precision_spearman": (">=", 0.99),
    "pipeline_max_rel_err": ("<=", 1e-4),
    "dropout_max_rel_err": ("<=", 1e-4),
    # Tile scores recombined by area equal the image's mean score (the bench's reduction).
    "region_max_rel_err": ("<=", 1e-4),
}


def missed_targets(checks: dict[str, float]) -> list[str]:
    """``name=value (target op bound)`` for each measured check that misses its target."""
    missed = []
    for name, value in checks.items():
        op, bound = CHECK_TARGETS[name]
        if not np.isnan(value) and not (value >= bound if op == ">=" else value <= bound):
            missed.append(f"{name}={value:.4g} (target {op} {bound:g})")
    return missed


def print_table(
    results: dict[str, dict[str, Any]], n: int, t: int, samples_per_pass: int
) -> list[str]:
    """Print the table and the RESULT line; return the checks that missed their targets."""
    from scipy.stats import spearmanr

    k = max(1, n // 4)
    reference = results.get("naive", {}).get("scores")
    print(
        f"\n{'path':<15} {'wall s':>7} {'img*samples/s':>13} {'cpu/wall':>8} {'peak RSS MB':>11} "
        f"{'added MB':>8} {'spearman':>8} {f'top-{k}':>6} {'rel diff':>8}  "
        "scores min..max  (vs naive)"
    )
    for name, r in results.items():
        r["throughput"] = n * t / r["wall_s"]
        if reference is not None:
            r["spearman"] = float(spearmanr(r["scores"], reference).statistic)
            r["top_k"] = top_k_overlap(r["scores"], reference, k)
            r["rel_diff"] = float(np.mean(np.abs(r["scores"] - reference) / np.abs(reference)))
        gpu = f"  peak GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else ""
        print(
            f"{name:<15} {r['wall_s']:>7.1f} {r['throughput']:>13.2f} "
            f"{r['cpu_s'] / r['wall_s']:>8.2f} {r['peak_rss_mb']:>11.0f} "
            f"{r['peak_rss_mb'] - r['rss_before_mb']:>8.0f} "
            f"{r.get('spearman', float('nan')):>8.4f} {r.get('top_k', float('nan')):>6.2f} "
            f"{r.get('rel_diff', float('nan')):>8.4f}  "
            f"{r['scores'].min():.4g}..{r['scores'].max():.4g}{gpu}"
        )
    if "project" in results and "project_seed+1" in results:
        a, b = results["project"]["scores"], results["project_seed+1"]["scores"]
        print(
            f"MC noise floor (project seed s vs s+1): spearman "
            f"{spearmanr(a, b).statistic:.4f}, top-{k} {top_k_overlap(a, b, k):.2f}, "
            f"mean |relative difference| {np.mean(np.abs(a - b) / np.abs(b)):.3f}"
        )

    def ratio(name: str, key: str, other: str) -> float:
        if name in results and other in results and results[other][key]:
            return results[name][key] / results[other][key]
        return float("nan")

    for r in results.values():
        r["added_mb"] = r["peak_rss_mb"] - r["rss_before_mb"]
    print(
        "peak RSS added by the path over its baseline (imports, pool, model): "
        + ", ".join(f"{name} {r['added_mb']:.0f} MB" for name, r in results.items())
        + f"; project/naive {ratio('project', 'added_mb', 'naive'):.3f}"
    )
    precision_spearman = pipeline_err = float("nan")
    if "precision_fp32" in results and "precision_bf16" in results:
        precision_spearman = float(
            spearmanr(
                results["precision_bf16"]["scores"], results["precision_fp32"]["scores"]
            ).statistic
        )
    if "pipeline_project" in results and "pipeline_naive" in results:
        got, want = results["pipeline_project"]["scores"], results["pipeline_naive"]["scores"]
        pipeline_err = float(np.max(np.abs(got - want) / np.abs(want)))
    dropout_err = float("nan")
    if samples_per_pass == 1 and "precision_fp32" in results and "naive" in results:
        got, want = results["precision_fp32"]["scores"], results["naive"]["scores"]
        dropout_err = float(np.max(np.abs(got - want) / np.abs(want)))
    region_err = float("nan")
    if "region" in results and "project" in results:
        got, want = results["region"]["scores"], results["project"]["scores"]
        region_err = float(np.max(np.abs(got - want) / np.abs(want)))
    print(
        f"RESULT speedup_vs_naive={ratio('project', 'throughput', 'naive'):.3f} "
        f"speedup_vs_baal={ratio('project', 'throughput', 'baal'):.3f} "
        f"peak_rss_ratio_vs_naive={ratio('project', 'peak_rss_mb', 'naive'):.3f} "
        f"precision_spearman={precision_spearman:.4f} pipeline_max_rel_err={pipeline_err:.2e} "
        f"dropout_max_rel_err={dropout_err:.2e} "
        f"region_time_ratio={ratio('region', 'wall_s', 'project'):.3f} "
        f"region_max_rel_err={region_err:.2e}"
    )
    return missed_targets(
        {
            "precision_spearman": precision_spearman,
            "pipeline_max_rel_err": pipeline_err,
            "dropout_max_rel_err": dropout_err,
            "region_max_rel_err": region_err,
        }
    )


if __name__ == "__main__":
    main()
