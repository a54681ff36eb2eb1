"""Benchmark of training throughput (patch samples per second) at active.py's training settings.

    python bench/train_step.py [--steps 10] [--batch-size 16] [--patch 416] [--warmup 2]
        [--n 16] [--data-path DIR] [--precision auto|bf16|fp32]

Two paths train the same UNet (base width 16, dropout 0.1, ``torch.manual_seed(0)``) with the
same augmentation, loss and optimizer, each in its own fresh subprocess:

* ``project``: what ``utils.loop.training.train_model`` does per step: a DataLoader over
  ``GlasDataset(ImageStore, train_transform(patch))`` (images decoded once and kept as uint8),
  model and input in channels_last, autocast per ``resolve_precision`` (bf16 on CPUs with
  AVX512-BF16/AMX), ``soft_dice_loss``, the non-finite-loss check and SGD from
  ``utils.loop.training.make_optimizer`` with active.py's hyper-parameters.
* ``naive``: a plain fp32 NCHW loop whose dataset decodes the image and mask BMPs from disk with
  PIL on every access, then applies the same ``train_transform``; same loss and optimizer.
* ``device`` (``--paths project,naive,device``): the project step with batches cropped and
  augmented on the device by ``data.device_augment.DeviceAugmenter`` (``augment_on=device``,
  the default on a GPU) instead of a DataLoader.

The pool is synthetic GlaS-size data (522x775, 1 in 5 images 0.8x smaller) written to a temp dir,
or the first ``--n`` images of a real GlaS folder. ``--warmup`` steps are excluded from the
timing (oneDNN primitive creation, allocator growth); data loading is inside the timed steps.

Last line: ``RESULT speedup_vs_naive=<project samples/s / naive samples/s>``, plus
``device_augment_vs_project=`` when the ``device`` path ran.
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

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset, RandomSampler  # noqa: E402
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

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
from data.device_augment import DeviceAugmenter  # noqa: E402
from data.glas import GlasDataset, ImageStore, SplitRow, load_pair  # noqa: E402
from data.transforms import effective_patch_size, train_transform  # noqa: E402
from models.unet import UNet  # noqa: E402
from utils.loop.device import autocast, pick_device, resolve_precision  # noqa: E402
from utils.loop.metrics import soft_dice_loss  # noqa: E402
from utils.loop.training import TrainSettings, make_optimizer, to_device  # noqa: E402

PATHS = ("project", "naive", "device")


class DiskDataset(Dataset):
    """Decodes ``NAME.bmp`` / ``NAME_anno.bmp`` with PIL on every access, then augments."""

    def __init__(self, data_path: str, rows: list[SplitRow], transform: v2.Transform):
        self.data_path, self.rows, self.transform = data_path, rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = load_pair(self.data_path, self.rows[index])  # PIL decode, every time
        image = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        image, mask = self.transform(image, tv_tensors.Mask(torch.from_numpy(mask)))
        image = image.as_subclass(torch.Tensor).float().div_(255.0)
        return image, mask.as_subclass(torch.Tensor).long()


class _Indices(Dataset):
    """Yields indices only: the ``device`` path's loader picks images, the augmenter does the
    rest on the device."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def make_loader(dataset: Dataset, config: dict[str, Any], pin_memory: bool = False) -> DataLoader:
    """Random batches as in train_model (RandomSampler with replacement-free epochs)."""
    generator = torch.Generator().manual_seed(0)
    n_samples = (config["warmup"] + config["steps"]) * config["batch_size"]
    sampler = RandomSampler(dataset, num_samples=n_samples, generator=generator)
    return DataLoader(
        dataset,
        batch_size=config["batch_size"],
        sampler=sampler,
        num_workers=0,
        pin_memory=pin_memory,
    )


def project_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> float:
    """The body of utils.loop.training.train_model's inner loop."""
    images, masks = batch[0], batch[1]
    with autocast(device, amp_dtype):
        logits = model(to_device(images, device))
    loss = soft_dice_loss(logits, masks.to(device, non_blocking=True))
    if not torch.isfinite(loss):  # train_model checks every step; the sync is part of its cost
        raise FloatingPointError(f"loss became {float(loss)}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def naive_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple, device: torch.device
) -> float:
    """Plain fp32 NCHW step: no channels_last, no autocast."""
    images, masks = batch
    loss = soft_dice_loss(model(images.to(device)), masks.to(device))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def worker(name: str, config: dict[str, Any]) -> None:
    device = pick_device(config["device"])
    rows = pool_rows(config["data_path"], config["n"])
    torch.manual_seed(0)
    model = UNet(3, 2, base_width=config["base_width"], dropout=config["dropout"])
    settings = TrainSettings(**config["train_settings"])
    if name == "project":
        store = ImageStore(config["data_path"], rows)  # decoded once, kept as uint8
        dataset: Dataset = GlasDataset(store, train_transform(tuple(config["patch_hw"])))
        model = model.to(device, memory_format=torch.channels_last)
        amp_dtype = resolve_precision(config["precision"], device)

        def step(batch: tuple) -> float:
            return project_step(model, optimizer, batch, device, amp_dtype)

    elif name == "device":
        store = ImageStore(config["data_path"], rows)
        model = model.to(device, memory_format=torch.channels_last)
        amp_dtype = resolve_precision(config["precision"], device)
        generator = torch.Generator().manual_seed(config["seed"])
        augmenter = DeviceAugmenter(
            store.images, store.masks, tuple(config["patch_hw"]), device, generator
        )
        dataset = _Indices(len(store))

        def step(batch: tuple) -> float:
            images, masks = augmenter.batch(batch.tolist())
            return project_step(model, optimizer, (images, masks), device, amp_dtype)

    else:
        dataset = DiskDataset(config["data_path"], rows, train_transform(tuple(config["patch_hw"])))
        model = model.to(device)

        def step(batch: tuple) -> float:
            return naive_step(model, optimizer, batch, device)

    optimizer, _ = make_optimizer(model, settings)
    model.train()
    torch.manual_seed(config["seed"])  # augmentation draws from the global generator
    # train_model pins its batches for a GPU; the naive reference does not.
    batches = iter(
        make_loader(dataset, config, pin_memory=name == "project" and device.type == "cuda")
    )
    for _ in range(config["warmup"]):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    started, cpu_started = time.perf_counter(), sum(os.times()[:2])
    losses = [step(next(batches)) for _ in range(config["steps"])]  # float() syncs each step
    wall = time.perf_counter() - started
    cpu = sum(os.times()[:2]) - cpu_started  # user + system, all threads of this process
    emit(
        {
            "name": name,
            "wall_s": wall,
            "cpu_s": cpu,
            "samples_per_s": config["steps"] * config["batch_size"] / wall,
            "peak_rss_mb": peak_rss_mb(),
            "last_loss": losses[-1],
        }
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch", type=int, default=416, help="square training crop")
    parser.add_argument("--n", type=int, default=16, help="images to sample patches from")
    parser.add_argument("--height", type=int, default=522, help="synthetic image height")
    parser.add_argument("--width", type=int, default=775, help="synthetic image width")
    parser.add_argument("--data-path", help="real GlaS folder (default: synthetic in a temp dir)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), help="project path")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (both paths)")
    parser.add_argument("--paths", default="project,naive", help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(args.config))
        return
    defaults = active_defaults()
    paths = [p for p in args.paths.split(",") if p]
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        data_path = args.data_path or str(
            make_synthetic_pool(Path(tmp) / "glas", args.n, args.height, args.width)
        )
        rows = pool_rows(data_path, args.n)
        min_size = ImageStore(data_path, rows).min_size
        config = {
            "data_path": data_path,
            "n": args.n,
            "steps": args.steps,
            "warmup": args.warmup,
            "batch_size": args.batch_size,
            # Shrunk to fit the smallest image, as utils.loop.run does.
            "patch_hw": effective_patch_size((args.patch, args.patch), min_size),
            "precision": args.precision or defaults["precision"],
            "device": args.device,
            "seed": args.seed,
            "base_width": defaults["base_width"],
            "dropout": defaults["dropout"],
            "train_settings": {
                key: defaults[key]
                for key in ("epochs", "lr", "momentum", "nesterov", "weight_decay")
                + ("lr_step_size", "lr_gamma")
            }
            | {"batch_size": args.batch_size},
        }
        print(f"machine: {machine_summary()}")
        print(
            f"{args.n} images from {args.data_path or 'synthetic'}, patch {config['patch_hw']}, "
            f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, "
            f"project precision {config['precision']}",
            flush=True,
        )
        results = {}
        for name in paths:
            busy = busy_cpu_percent()
            results[name] = run_worker(Path(__file__), name, config)
            print(f"  {name}: {results[name]['wall_s']:.1f}s (CPU busy before: {busy:.0f}%)")

    print(
        f"\n{'path':<8} {'wall s':>8} {'samples/s':>10} {'cpu/wall':>8} {'peak RSS MB':>12} "
        f"{'last loss':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<8} {r['wall_s']:>8.1f} {r['samples_per_s']:>10.3f} "
            f"{r['cpu_s'] / r['wall_s']:>8.2f} {r['peak_rss_mb']:>12.0f} {r['last_loss']:>10.4f}"
        )
    speedup = float("nan")
    if "project" in results and "naive" in results:
        speedup = results["project"]["samples_per_s"] / results["naive"]["samples_per_s"]
    line = f"RESULT speedup_vs_naive={speedup:.3f}"
    if "device" in results and "project" in results:
        ratio = results["device"]["samples_per_s"] / results["project"]["samples_per_s"]
        line += f" device_augment_vs_project={ratio:.3f}"
    print(line)


if __name__ == "__main__":
    main()
