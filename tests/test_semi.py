"""Learning from the unlabelled pool: pseudo-labels, the EMA teacher, and runs that use them."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from data.regions import IGNORE
from models import UNet
from tests.conftest import tiny_config
from utils.config import ConfigError, ExperimentConfig, validate
from utils.loop import training
from utils.loop.metrics import soft_dice_loss
from utils.loop.run import run_active_learning
from utils.loop.semi import (
    TEACHER_NOISE,
    PoolCrops,
    PseudoLabelBank,
    TeacherOutput,
    consistency_loss,
    ema_model,
    ema_start,
    pseudo_label_quality,
    pseudo_labels,
    sigmoid_rampup,
    teacher_predict,
)
from utils.loop.training import TrainSettings, train_model


def two_class_probs(gland: list[list[list[float]]]) -> torch.Tensor:
    """``[1, 2, H, W, T]`` from the gland probability of each pixel and sample ``[H][W][T]``."""
    p = torch.tensor(gland, dtype=torch.float32)  # [H, W, T]
    return torch.stack([1 - p, p]).unsqueeze(0)


def test_pseudo_labels_cover_only_the_pixels_under_the_threshold() -> None:
    # Pixel by pixel (two samples each): sure gland, sure background, split samples, borderline.
    probs = two_class_probs([[[0.9999, 0.9999], [0.0001, 0.0001]], [[0.99, 0.01], [0.995, 0.995]]])
    # Entropy of the mean, in nats: 0.0010, 0.0010, ln 2 = 0.693, 0.0313.
    labels = pseudo_labels(probs, threshold=0.005)
    assert labels.tolist() == [[1, 0], [IGNORE, IGNORE]]
    # A looser threshold admits the borderline pixel, never the split one.
    assert pseudo_labels(probs, threshold=0.05).tolist() == [[1, 0], [IGNORE, 1]]
    # Nor a pixel whose probabilities are not numbers: it is no confident prediction.
    probs[0, :, 0, 0] = float("nan")
    assert pseudo_labels(probs, threshold=0.05).tolist() == [[IGNORE, 0], [IGNORE, 1]]


def test_ignored_pixels_get_no_gradient() -> None:
    probs = two_class_probs([[[0.9999, 0.9999], [0.5, 0.5]], [[0.0001, 0.0001], [0.3, 0.9]]])
    target = pseudo_labels(probs, threshold=0.005).unsqueeze(0)  # [1, H, W]
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    soft_dice_loss(logits, target).backward()
    ignored = target[0] == IGNORE
    assert ignored.tolist() == [[False, True], [False, True]]
    assert torch.all(logits.grad[0][:, ignored] == 0)
    assert torch.all(logits.grad[0][:, ~ignored].abs().sum(0) > 0)


def test_the_bank_leaves_out_annotated_pixels_and_round_trips(tmp_path: Path) -> None:
    bank = PseudoLabelBank(threshold=0.005)
    bank.add(3, two_class_probs([[[0.9999], [0.0001]], [[0.5], [0.9999]]]))
    bank.add(5, two_class_probs([[[0.5], [0.5]]]))  # nothing confident: dropped from training
    annotated = {3: torch.tensor([[False, True], [False, False]])}
    masks = bank.masks(annotated.get)
    assert list(masks) == [3]
    assert masks[3].tolist() == [[1, IGNORE], [IGNORE, 1]]
    bank.save(tmp_path / "labels.npz")
    again = PseudoLabelBank(threshold=0.005)
    again.load(tmp_path / "labels.npz")
    assert {k: v.tolist() for k, v in again.labels.items()} == {
        k: v.tolist() for k, v in bank.labels.items()
    }


def test_the_bank_keeps_every_class_up_to_the_largest_allowed(tmp_path: Path) -> None:
    # [1, C, H, W, T]: one pixel sure of each of the classes 0, 127, 128 and 254.
    probs = torch.full((1, 255, 1, 4, 1), 1e-6)
    for x, cls in enumerate((0, 127, 128, 254)):
        probs[0, cls, 0, x, 0] = 1.0
    bank = PseudoLabelBank(threshold=0.01)
    bank.add(0, probs / probs.sum(1, keepdim=True))
    bank.save(tmp_path / "labels.npz")
    bank.load(tmp_path / "labels.npz")
    assert bank.masks({}.get)[0].tolist() == [[0, 127, 128, 254]]


def test_pseudo_label_quality_by_hand() -> None:
    i = IGNORE
    labels = {
        3: torch.tensor([[1, 1, i], [0, i, 0]], dtype=torch.int8),
        5: torch.tensor([[1, 0, 0]], dtype=torch.int8),  # labelled whole since: not pool
        7: torch.tensor([[0, 1, i]], dtype=torch.int8),
    }
    truth = {
        3: torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.uint8),
        5: torch.tensor([[0, 0, 0]], dtype=torch.uint8),
        7: torch.tensor([[0, 1, 1]], dtype=torch.uint8),
    }
    annotated = {
        3: torch.tensor([[False, False, False], [False, False, True]]),  # one region labelled
        5: torch.ones(1, 3, dtype=torch.bool),
    }
    quality = pseudo_label_quality(labels, annotated.get, truth, num_classes=2)
    # Pool pixels: 5 of image 3, 3 of image 7. Labelled: 3 + 2 = 5, of which right: 2 + 2.
    assert quality["coverage"] == pytest.approx(5 / 8)
    assert quality["accuracy"] == pytest.approx(4 / 5)
    # Background: 2 + 1 pool pixels, all labelled; gland: 3 + 2, of which 1 + 1 labelled.
    assert quality["coverage_per_class"] == pytest.approx([3 / 3, 2 / 5])
    nothing = pseudo_label_quality({7: torch.full((1, 3), i, dtype=torch.int8)}, {}.get, truth, 3)
    assert nothing == {"coverage": 0.0, "accuracy": None, "coverage_per_class": [0.0, 0.0, None]}


def test_ema_weights_equal_the_hand_computed_average_after_k_steps() -> None:
    model = nn.Linear(1, 1, bias=False)
    history = [1.0, 3.0, -2.0, 5.0, 0.5]
    with torch.no_grad():
        model.weight.fill_(history[0])
    average = ema_model(model, decay=0.6)
    average.update_parameters(model)
    expected = history[0]
    for n, value in enumerate(history[1:], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update_parameters(model)
        a = min(0.6, 1 - 1 / (n + 1))  # 0.5, then 0.6: a plain mean until the decay takes over
        expected = a * expected + (1 - a) * value
    # By hand: 1 -> 2 -> 0.4 -> 2.24 -> 1.544
    assert expected == pytest.approx(1.544)
    assert average.module.weight.item() == pytest.approx(1.544, abs=1e-6)


class FourCrops(torch.utils.data.Dataset):
    """Four fixed 32 x 32 crops with a square of foreground."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(4, 3, 32, 32, generator=generator)
        self.masks = torch.zeros(4, 32, 32, dtype=torch.long)
        self.masks[:, 8:24, 8:24] = 1

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int, str]:
        return self.images[i], self.masks[i], 0, f"crop_{i}"


def test_ema_selection_averages_the_last_quarter_of_the_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = UNet(3, 2, 4, dropout=0.1)
    snapshots = []  # the weights after every optimiser step
    make = training.make_optimizer

    def recording(model: nn.Module, settings: TrainSettings):
        optimizer, scheduler = make(model, settings)
        optimizer.register_step_post_hook(
            lambda *_: snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        )
        return optimizer, scheduler

    monkeypatch.setattr(training, "make_optimizer", recording)
    settings = TrainSettings(8, 2, 0.05, 0.9, True, 0.0, 100, 0.1, 1, ema_decay=0.6)
    train_model(model, FourCrops(), None, settings, torch.device("cpu"), None,
                torch.Generator().manual_seed(1), progress=False, ema=True)  # fmt: skip
    # 8 epochs of 2 steps: the average starts from the weights after step 12 of 16.
    assert len(snapshots) == 16 and ema_start(16) == 12
    expected = dict(snapshots[11])
    for n, weights in enumerate(snapshots[12:], start=1):
        a = min(0.6, 1 - 1 / (n + 1))
        for key, value in weights.items():
            floating = value.is_floating_point()
            expected[key] = a * expected[key] + (1 - a) * value if floating else value
    final = model.state_dict()
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(final["head.weight"], snapshots[-1]["head.weight"])


def test_ema_and_a_validation_set_together_are_refused() -> None:
    settings = TrainSettings(1, 2, 0.05, 0.9, True, 0.0, 100, 0.1, 1)
    with pytest.raises(ValueError, match="ema and val_set choose the weights two ways"):
        train_model(UNet(3, 2, 4), FourCrops(), FourCrops(), settings, torch.device("cpu"),
                    None, torch.Generator(), progress=False, ema=True)  # fmt: skip


def test_val_selection_restores_the_weights_of_the_best_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = UNet(3, 2, 4, dropout=0.1)
    losses, seen = iter([0.5, 0.1, 0.9]), []

    def validation_loss(model: nn.Module, *_) -> float:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(losses)

    monkeypatch.setattr(training, "validation_loss", validation_loss)
    settings = TrainSettings(3, 2, 0.05, 0.9, True, 0.0, 100, 0.1, 1)
    info = train_model(model, FourCrops(), FourCrops(), settings, torch.device("cpu"), None,
                       torch.Generator().manual_seed(1), progress=False)  # fmt: skip
    assert info["best_val_loss"] == 0.1 and info["best_epoch"] == 1
    final = model.state_dict()
    for key, value in seen[1].items():  # the weights validated after the second epoch
        torch.testing.assert_close(final[key], value, rtol=0, atol=0)
    assert not torch.equal(final["head.weight"], seen[2]["head.weight"])


def test_the_mean_teacher_follows_the_student_every_step(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from data.glas import ImageStore, read_split
    from data.transforms import train_transform

    teachers = []

    class Recorded(training._Teacher):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            teachers.append(self)

    monkeypatch.setattr(training, "_Teacher", Recorded)
    store = ImageStore(synthetic_root / "GlaS", read_split(synthetic_root / "splits", "train"))
    crops = PoolCrops(store, [0, 1], train_transform((32, 32)))
    semi = training.SemiTraining("mean_teacher", crops, 1.0)
    torch.manual_seed(0)
    model = UNet(3, 2, 4, dropout=0.1)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    # With decay 0 the EMA is the latest student: after training, the student's last weights.
    settings = TrainSettings(2, 2, 0.05, 0.9, True, 0.0, 100, 0.1, 1, ema_decay=0.0)
    train_model(model, FourCrops(), None, settings, torch.device("cpu"), None,
                torch.Generator().manual_seed(1), progress=False, semi=semi)  # fmt: skip
    (teacher,) = teachers
    for key, value in model.state_dict().items():
        torch.testing.assert_close(teacher.state_dict()[key], value)
    assert not torch.equal(teacher.state_dict()["head.weight"], initial["head.weight"])


def test_the_pseudo_label_loss_reaches_the_weights(synthetic_root: Path) -> None:
    from data.glas import ImageStore, read_split
    from data.transforms import train_transform

    store = ImageStore(synthetic_root / "GlaS", read_split(synthetic_root / "splits", "train"))
    everywhere = {i: torch.ones(store.images[i].shape[1:], dtype=torch.int64) for i in (0, 1)}
    crops = PoolCrops(store, [0, 1], train_transform((32, 32)), everywhere)
    settings = TrainSettings(2, 2, 0.05, 0.9, True, 0.0, 100, 0.1, 1)

    def trained(weight: float) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = UNet(3, 2, 4, dropout=0.1)
        semi = training.SemiTraining("pseudo", crops, weight)
        train_model(model, FourCrops(), None, settings, torch.device("cpu"), None,
                    torch.Generator().manual_seed(1), progress=False, semi=semi)  # fmt: skip
        return model.state_dict()

    # Same crops, same forward passes (BatchNorm sees the pool crops either way): only the
    # gradient of the pseudo-label term tells the two apart.
    with_loss, without = trained(1.0), trained(0.0)
    assert not torch.equal(with_loss["head.weight"], without["head.weight"])
    assert torch.equal(trained(0.0)["head.weight"], without["head.weight"])  # seeded alike


def test_consistency_is_masked_by_the_teachers_certainty() -> None:
    student = torch.zeros(1, 2, 1, 2)  # softmax 0.5 / 0.5 everywhere
    teacher = TeacherOutput(
        probs=torch.tensor([[[[0.9, 0.2]], [[0.1, 0.8]]]]),  # [1, 2, 1, 2]
        certain=torch.tensor([[[True, False]]]),
    )
    # Only the first pixel counts: ((0.5 - 0.9)^2 + (0.5 - 0.1)^2) / (2 * 1) = 0.16.
    assert consistency_loss(student, teacher).item() == pytest.approx(0.16)
    nothing = TeacherOutput(teacher.probs, torch.zeros(1, 1, 2, dtype=torch.bool))
    assert consistency_loss(student, nothing).item() == 0.0
    # An annotated pixel is learnt from its label: out of the consistency, however certain.
    annotated_first = torch.tensor([[[False, True]]])
    assert consistency_loss(student, teacher, annotated_first).item() == 0.0
    assert consistency_loss(student, teacher, ~annotated_first).item() == pytest.approx(0.16)


def test_the_mean_teacher_leaves_out_the_annotated_pixels_of_its_pool() -> None:
    from tests.test_units import units
    from utils.loop.run import semi_training
    from utils.loop.semi import POOL_PIXEL

    _, unit = units([0, 3])
    unit.label([(1, 0)])  # image 1's first tile: the image stays in the pool, partly labelled
    cfg = ExperimentConfig(semi="mean_teacher", label_unit="region")
    setup = SimpleNamespace(train_store=unit.store, unit=unit, patch=(8, 8))
    semi = semi_training(cfg, setup)
    assert semi.crops.images == [1, 2, 4, 5] and semi.crops.fill == POOL_PIXEL
    assert list(semi.crops.masks) == [1]
    assert torch.equal(semi.crops.masks[1] == IGNORE, unit.annotated(1))
    assert bool((semi.crops.masks[1] == POOL_PIXEL).any())


def test_the_consistency_is_kept_to_the_pool_crops_pool_pixels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given, seen = [], []

    def batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        masks = torch.zeros((n, 32, 32), dtype=torch.long)
        masks[:, :, : 4 + len(given)] = IGNORE  # annotated, left of a column that moves
        given.append(masks.clone())
        return torch.rand(n, 3, 32, 32, generator=generator), masks

    def recording(student, teacher, pool=None):
        seen.append(pool.clone())
        return consistency_loss(student, teacher, pool)

    monkeypatch.setattr(training, "consistency_loss", recording)
    semi = training.SemiTraining("mean_teacher", SimpleNamespace(batch=batch), 0.1, math.log(2))
    torch.manual_seed(0)
    settings = TrainSettings(2, 2, 0.05, 0.9, True, 0.0, 100, 0.1, 1)
    train_model(UNet(3, 2, 4, dropout=0.1), FourCrops(), None, settings, torch.device("cpu"),
                None, torch.Generator().manual_seed(1), progress=False, semi=semi)  # fmt: skip
    assert len(seen) == len(given) == 4
    for pool, masks in zip(seen, given, strict=True):
        assert torch.equal(pool, masks != IGNORE)


def test_consistency_is_the_mean_over_classes_and_certain_pixels() -> None:
    student = torch.zeros(1, 3, 1, 2)  # logits: softmax 1/3 for each of 3 classes
    teacher = TeacherOutput(
        probs=torch.tensor([[[[1.0, 0.2]], [[0.0, 0.3]], [[0.0, 0.5]]]]),  # [1, 3, 1, 2]
        certain=torch.tensor([[[True, False]]]),
    )
    # First pixel only: ((1/3 - 1)^2 + (1/3)^2 + (1/3)^2) / (3 classes * 1 pixel) = (6/9) / 3.
    assert consistency_loss(student, teacher).item() == pytest.approx(2 / 9)


class PassTable(nn.Module):
    """A teacher whose foreground probability is ``table[pass][image]`` at every pixel; it keeps
    the batch it was given."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.tensor(table)  # [T, B]
        self.seen = torch.empty(0)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.seen = batch.clone()
        p = self.table.reshape(-1)[:, None, None]  # row t * B + b, as images.repeat lays out
        logits = torch.stack([torch.log1p(-p), torch.log(p)], 1)  # [T * B, 2, 1, 1]
        return logits.expand(-1, -1, *batch.shape[2:])


def test_the_teacher_averages_each_images_own_noisy_passes() -> None:
    table = [[0.99, 0.2], [0.97, 0.6], [0.98, 0.4]]  # 3 passes of 2 images
    teacher = PassTable(table)
    images = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    out = teacher_predict(teacher, images, 3, 0.3, torch.Generator().manual_seed(1))
    # Image 0: mean 0.98, entropy 0.098 nats < 0.3, certain; image 1: mean 0.4, 0.673, not.
    assert out.probs.shape == (2, 2, 4, 5)
    assert torch.allclose(out.probs[:, 1, 0, 0], torch.tensor([0.98, 0.4]))
    assert torch.allclose(out.probs.sum(1), torch.ones(2, 4, 5))
    assert out.certain[0].all() and not out.certain[1].any()
    noise = teacher.seen - images.repeat(3, 1, 1, 1)
    std, clip = TEACHER_NOISE
    assert noise.abs().max() <= clip + 1e-6 and noise.std() > std / 2  # clipped Gaussian noise
    assert not torch.equal(noise[:2], noise[2:4])  # each pass its own noise
    again = teacher_predict(PassTable(table), images, 3, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(again.probs, out.probs)


def test_the_teachers_threshold_and_weight_ramp_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """UA-MT's schedule: the certainty threshold grows from 3/4 of its final value, and the
    consistency weight from 0, with the ramp."""
    thresholds = []

    def half_everywhere(module, images, passes, threshold, generator) -> TeacherOutput:
        thresholds.append(threshold)
        probs = torch.full((len(images), 2, *images.shape[2:]), 0.5)
        return TeacherOutput(probs, torch.ones(len(images), *images.shape[2:], dtype=torch.bool))

    monkeypatch.setattr(training, "teacher_predict", half_everywhere)
    pool = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    crops = SimpleNamespace(batch=lambda n, generator: (pool[:n], torch.zeros(n, 8, 8).long()))
    semi = training.SemiTraining("mean_teacher", crops, weight=0.1, threshold=0.6)
    model = nn.Conv2d(3, 2, 1)  # per pixel: the pool's logits do not depend on the batch
    images, masks = torch.rand(2, 3, 8, 8), torch.ones(2, 8, 8).long()
    consistency = consistency_loss(model(pool), half_everywhere(None, pool, 0, 0.6, None))
    thresholds.clear()
    for ramp in (0.0, 0.5, 1.0):
        _, extra = training._semi_losses(
            model,
            SimpleNamespace(module=model),
            semi,
            images,
            masks,
            torch.device("cpu"),
            None,
            torch.Generator().manual_seed(0),
            ramp,
        )
        assert extra.item() == pytest.approx(0.1 * ramp * consistency.item(), rel=1e-5)
    assert thresholds == pytest.approx([0.45, 0.525, 0.6])


def train_mean_teacher(monkeypatch: pytest.MonkeyPatch, epochs: int) -> dict[str, list]:
    """A mean-teacher ``train_model`` of ``epochs`` x 2 steps (4 crops, batch 2) with EMA decay 0,
    so that the teacher is a copy of the student's weights at its last update. Records, per
    step, the threshold and the teacher's weights given to ``teacher_predict``, and the student's
    weights after each optimiser step."""
    record: dict[str, list] = {"thresholds": [], "teachers": [], "students": []}

    def certain_half(module, images, passes, threshold, generator) -> TeacherOutput:
        record["thresholds"].append(threshold)
        record["teachers"].append({k: v.clone() for k, v in module.state_dict().items()})
        probs = torch.full((len(images), 2, *images.shape[2:]), 0.5)
        return TeacherOutput(probs, torch.ones(len(images), *images.shape[2:], dtype=torch.bool))

    make = training.make_optimizer

    def recording(model: nn.Module, settings: TrainSettings):
        optimizer, scheduler = make(model, settings)
        optimizer.register_step_post_hook(
            lambda *_: record["students"].append(
                {k: v.clone() for k, v in model.state_dict().items()}
            )
        )
        return optimizer, scheduler

    monkeypatch.setattr(training, "teacher_predict", certain_half)
    monkeypatch.setattr(training, "make_optimizer", recording)
    pool = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    crops = SimpleNamespace(batch=lambda n, generator: (pool[:n], torch.zeros(n, 32, 32).long()))
    semi = training.SemiTraining("mean_teacher", crops, weight=1.0, threshold=0.6)
    torch.manual_seed(0)
    model = UNet(3, 2, 4, dropout=0.1)
    record["initial"] = [{k: v.clone() for k, v in model.state_dict().items()}]
    settings = TrainSettings(epochs, 2, 0.05, 0.9, True, 0.0, 100, 0.1, 1, ema_decay=0.0)
    train_model(model, FourCrops(), None, settings, torch.device("cpu"), None,
                torch.Generator().manual_seed(1), progress=False, semi=semi)  # fmt: skip
    return record


def test_the_teachers_threshold_ramps_up_over_the_steps_of_the_cycle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    thresholds = train_mean_teacher(monkeypatch, epochs=3)["thresholds"]
    # 3 epochs of 2 steps: at step s of 6 the threshold is (0.75 + 0.25 exp(-5 (1 - s/6)^2)) * 0.6,
    # step by step (an epoch-based ramp would repeat each value twice and end at 0.53606).
    expected = [(0.75 + 0.25 * math.exp(-5 * (1 - s / 6) ** 2)) * 0.6 for s in range(6)]
    by_hand = [0.45101, 0.45466, 0.46626, 0.49298, 0.53606, 0.58055]
    assert expected == pytest.approx(by_hand, abs=1e-5)
    assert thresholds == pytest.approx(expected, rel=1e-12)


def test_the_teacher_is_updated_after_every_optimiser_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = train_mean_teacher(monkeypatch, epochs=2)
    teachers, students = record["teachers"], record["students"]
    assert len(teachers) == len(students) == 4
    # With decay 0, the teacher of step s is the student after step s - 1 (the initial weights
    # at step 0): also within an epoch, which an update once per epoch would miss.
    for teacher, student in zip(teachers, record["initial"] + students[:-1], strict=True):
        assert teacher.keys() == student.keys()
        for key, value in student.items():
            torch.testing.assert_close(teacher[key], value, rtol=0, atol=0)
    assert not torch.equal(teachers[1]["head.weight"], teachers[0]["head.weight"])


def test_the_pseudo_label_loss_is_against_the_pool_crops_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    targets, given = [], []

    def recording(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        targets.append(target.clone())
        return soft_dice_loss(logits, target)

    def batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # Background left of a column that moves with each batch, the rest left out; the
        # labelled crops are a square of foreground.
        masks = torch.full((n, 32, 32), IGNORE, dtype=torch.long)
        masks[:, :, : 4 + len(given)] = 0
        given.append(masks.clone())
        return torch.rand(n, 3, 32, 32, generator=generator), masks

    monkeypatch.setattr(training, "soft_dice_loss", recording)
    semi = training.SemiTraining("pseudo", SimpleNamespace(batch=batch), 1.0)
    torch.manual_seed(0)
    settings = TrainSettings(2, 2, 0.05, 0.9, True, 0.0, 100, 0.1, 1)
    train_model(UNet(3, 2, 4, dropout=0.1), FourCrops(), None, settings, torch.device("cpu"),
                None, torch.Generator().manual_seed(1), progress=False, semi=semi)  # fmt: skip
    # Per step: the labelled loss on the labelled masks, then the pool crops' pseudo-labels.
    assert len(targets) == 2 * len(given) == 8
    for labelled, pseudo, pool in zip(targets[::2], targets[1::2], given, strict=True):
        assert torch.equal(labelled, FourCrops().masks[:2])
        assert torch.equal(pseudo, pool)


def test_sigmoid_rampup_golden_values() -> None:
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10, 10) == sigmoid_rampup(20, 10) == 1.0


def test_pool_crops_without_pseudo_labels_carry_no_label(synthetic_root: Path) -> None:
    from data.glas import ImageStore, read_split
    from data.transforms import train_transform

    store = ImageStore(synthetic_root / "GlaS", read_split(synthetic_root / "splits", "train"))
    crops = PoolCrops(store, [0, 2], train_transform((16, 16)))
    images, masks = crops.batch(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, 16, 16) and masks.shape == (3, 16, 16)
    assert torch.all(masks == IGNORE)


@pytest.mark.parametrize(
    ("update", "fragment"),
    [
        ({"semi": "fixmatch"}, "semi must be one of none, pseudo, mean_teacher"),
        ({"pseudo_threshold": 0.0}, "pseudo_threshold must be in (0, ln(num_classes)"),
        ({"pseudo_threshold": 0.8}, "pseudo_threshold must be in (0, ln(num_classes)"),
        ({"pseudo_weight": -0.5}, "pseudo_weight must be >= 0"),
        ({"consistency_weight": -1.0}, "consistency_weight must be >= 0"),
        ({"ema_decay": 1.0}, "ema_decay must be in [0, 1)"),
        ({"model_selection": "best"}, "model_selection must be one of val, last, ema"),
    ],
)
def test_bad_semi_settings_are_refused_in_one_line(update: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(replace(ExperimentConfig(), **update))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def run_tiny(synthetic_root: Path, results: Path, **updates) -> np.ndarray:
    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", results, **updates)
    return run_active_learning(ExperimentConfig.from_mapping(config))


def test_pseudo_runs_end_to_end_and_says_so(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_teacher(*args: object) -> None:
        raise AssertionError("pseudo-labels need no EMA teacher")

    monkeypatch.setattr(training, "_Teacher", no_teacher)
    # A loose threshold: the tiny model is never as sure as CEAL's threshold asks.
    loose = {"pseudo_threshold": 0.69, "epochs": 4, "model_selection": "last"}
    dice = run_tiny(synthetic_root, tmp_path, semi="pseudo", heuristic="random", **loose)
    record = json.loads((tmp_path / "random+pseudo_0.json").read_text())
    assert record["name"] == "random+pseudo" and record["config"]["semi"] == "pseudo"
    assert len(dice) == 3 and np.all((0 <= dice) & (dice <= 1))
    # Cycle 0 has no pseudo-labels yet (no acquisition pass has run); later cycles train on them.
    assert "last_unlabelled_loss" not in record["train"][0]
    assert all(math.isfinite(t["last_unlabelled_loss"]) for t in record["train"][1:])
    # Their quality against the pool's ground truth is recorded, for the simulation only.
    assert "pseudo_labels" not in record["train"][0]
    for cycle in record["train"][1:]:
        quality = cycle["pseudo_labels"]
        assert 0 < quality["coverage"] <= 1 and 0 <= quality["accuracy"] <= 1
        assert len(quality["coverage_per_class"]) == 2
    # Random scores nothing, even though its pool got an MC pass for the pseudo-labels.
    assert all(a["score"] is None for cycle in record["acquired"] for a in cycle)
    plain = run_tiny(synthetic_root, tmp_path / "plain", heuristic="random", **loose)
    assert dice[0] == plain[0]  # the same cycle 0, bitwise
    assert dice[1] != plain[1]


@pytest.mark.parametrize("label_unit", ["image", "region"])
def test_mean_teacher_with_ema_weights_runs_in_both_label_units(
    synthetic_root: Path, tmp_path: Path, label_unit: str
) -> None:
    dice = run_tiny(
        synthetic_root,
        tmp_path,
        semi="mean_teacher",
        model_selection="ema",
        label_unit=label_unit,
        region_size=[16, 16],
        al_cycles=1,
    )
    name = "bald+mean_teacher" if label_unit == "image" else "bald-region+mean_teacher"
    record = json.loads((tmp_path / f"{name}_0.json").read_text())
    assert record["validation_images"] == 0 and record["config"]["model_selection"] == "ema"
    assert all(t["last_unlabelled_loss"] >= 0 for t in record["train"])
    assert len(dice) == 2 and np.all((0 <= dice) & (dice <= 1))


def test_ema_selection_changes_the_weights_but_reads_no_validation_label(
    synthetic_root: Path, tmp_path: Path
) -> None:
    last = run_tiny(
        synthetic_root, tmp_path / "last", model_selection="last", al_cycles=0, epochs=4
    )
    ema = run_tiny(synthetic_root, tmp_path / "ema", model_selection="ema", al_cycles=0, epochs=4)
    assert last[0] != ema[0]  # same training, other weights evaluated
    record = json.loads((tmp_path / "ema/bald_0.json").read_text())
    assert record["validation_images"] == 0 and record["train"][0]["best_val_loss"] is None
