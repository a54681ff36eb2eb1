"""The labelling-unit seam: whole images and regions answer the loop's questions alike."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from baal.active import ActiveLearningDataset

from data.regions import RegionLabels
from data.segmentation import ImageStore, SegmentationDataset, SplitRow
from heuristics.reductions import ReductionSettings
from heuristics.strategies import STRATEGIES, Selection
from utils.errors import UserError
from utils.loop.acquisition import AcquisitionSettings, acquire
from utils.loop.inference import MCSettings
from utils.loop.units import ImageUnit, RegionUnit
from utils.runs.state import History, ResumeError, RunState

SHAPES = [(16, 24), (16, 16), (24, 16), (16, 24), (16, 16), (24, 24)]


def tiny_store() -> ImageStore:
    """Six images of the given shapes, groups 0/1 alternating, mask = top half foreground."""

    def load(row: SplitRow, scale: float) -> tuple[np.ndarray, np.ndarray]:
        index = int(row.name.split("_")[1])
        height, width = SHAPES[index]
        image = np.full((height, width, 3), 10 * index, np.uint8)
        mask = np.zeros((height, width), np.uint8)
        mask[: height // 2] = 1
        return image, mask

    rows = [SplitRow(f"img_{i}.png", f"img_{i}.png", i % 2) for i in range(len(SHAPES))]
    return ImageStore(rows, load)


def units(initial: list[int]) -> tuple[ImageUnit, RegionUnit]:
    store = tiny_store()
    made = []
    for kind in ("image", "region"):
        al_set = ActiveLearningDataset(SegmentationDataset(store))
        al_set.label(initial)
        if kind == "image":
            made.append(ImageUnit(store, al_set, n_per_step=1))
        else:
            regions = RegionLabels(SHAPES, (8, 8))
            made.append(RegionUnit(store, al_set, regions, n_per_step=1))
        made[-1].start()
    return made[0], made[1]


def test_both_units_start_from_the_same_whole_images() -> None:
    image, region = units([0, 3])
    assert image.n_labelled() == region.n_labelled() == 2
    assert image.labelled_pixels() == region.labelled_pixels() == 16 * 24 * 2
    for image_index in range(len(SHAPES)):
        whole, tiles = image.annotated(image_index), region.annotated(image_index)
        assert (whole is None) == (tiles is None) == (image_index not in (0, 3))
        if whole is not None:
            assert torch.equal(whole, tiles)
    assert image.unlabelled_images() == region.unlabelled_images() == [1, 2, 4, 5]


def test_image_unit_labels_by_train_index_and_describes_what_it_labelled() -> None:
    image, _ = units([0, 3])
    assert image.pool() == [1, 2, 4, 5]
    described = image.describe([4, 2], [0.5, None])
    image.label([4, 2])  # baal labels by pool position: 4 is position 2, 2 is position 1
    assert described == [{"name": "img_4", "score": 0.5}, {"name": "img_2", "score": None}]
    assert np.flatnonzero(image.al_set.labelled).tolist() == [0, 2, 3, 4]
    assert image.grades([1, 2, 5]).tolist() == [1, 0, 1]
    image.label([])  # baal's own label([]) labels every pool image
    assert np.flatnonzero(image.al_set.labelled).tolist() == [0, 2, 3, 4]


def test_region_unit_spends_one_average_image_of_pixels_per_group() -> None:
    _, region = units([0])
    items = region.pool()
    mean_image = sum(h * w for h, w in SHAPES) / len(SHAPES)  # 373.3 pixels

    def selection_for(k: int) -> Selection:
        grades = region.grades(items)
        return Selection(np.empty(0), grades, k, True, np.random.default_rng(0))

    picks = region.select(STRATEGIES["random"], selection_for, items)
    chosen = [items[i] for i in picks]
    spent = {g: 0 for g in (0, 1)}
    for image_index, tile in chosen:
        spent[image_index % 2] += region.regions.area((image_index, tile))
    # Every tile is 8x8 (64 pixels): five fit a group's budget and a sixth would not.
    assert mean_image // 64 == 5 and spent == {0: 5 * 64, 1: 5 * 64}
    region.label(chosen)
    assert region.labelled_pixels() == 16 * 24 + sum(spent.values())
    assert all(
        set(d) == {"name", "region", "box", "score"}
        for d in region.describe(chosen, [None] * len(chosen))
    )


def test_region_unit_restores_its_tiles_and_refuses_other_superpixels() -> None:
    _, region = units([0])
    region.label([(1, 0), (2, 3)])
    state = RunState(config={}, labelled_map=[], history=History(), validation_images=0)
    region.save(state)
    _, fresh = units([0])
    fresh.restore(state, "bald-region_0")
    assert fresh.regions.labelled == region.regions.labelled
    state.regions_digest = "something else"
    with pytest.raises(ResumeError, match="bald-region_0: the superpixels differ"):
        fresh.restore(state, "bald-region_0")


class ConstantModel(torch.nn.Module):
    """Predicts class 1 with probability p_i for image i (its first pixel's value / 255)."""

    feature_cell = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x[:, :1, :1, :1].expand(-1, 1, *x.shape[2:]) * 4  # [N, 1, H, W]
        return torch.cat([torch.zeros_like(p), p], 1)  # logits


def acquisition_settings(maps_dir: Path) -> AcquisitionSettings:
    """Top-k entropy, balanced by group, on the CPU."""
    return AcquisitionSettings(
        heuristic="entropy",
        strategy=STRATEGIES["topk"],
        reduction="mean",
        reduction_settings=ReductionSettings(),
        balance=True,
        run=0,
        n_cycles=1,
        temperature=1.0,
        suggestive_factor=2,
        device=torch.device("cpu"),
        amp_dtype=None,
        maps_dir=maps_dir,
        progress=False,
    )


def test_acquisition_settings_carry_every_selection_key_of_the_config(tmp_path: Path) -> None:
    from utils.config import ExperimentConfig, validate

    cfg = validate(
        ExperimentConfig(
            heuristic="bald",
            strategy="power",
            reduction="topq",
            topq_percent=7.0,
            foreground_band=20,
            image_scale=0.5,
            balance_al=False,
            run=3,
            al_cycles=5,
            temperature=0.7,
            suggestive_factor=3,
            save_uncerts=True,
            progress=False,
        )
    )
    settings = AcquisitionSettings.from_config(cfg, torch.device("cpu"), None, tmp_path)
    assert (settings.heuristic, settings.strategy, settings.reduction) == (
        "bald",
        STRATEGIES["power"],
        "topq",
    )
    # The band is in pixels of the loaded (here half-size) images.
    assert settings.reduction_settings == ReductionSettings(topq_percent=7.0, foreground_band=10)
    assert (settings.balance, settings.run, settings.n_cycles) == (False, 3, 5)
    assert (settings.temperature, settings.suggestive_factor) == (0.7, 3)
    assert (settings.save_maps, settings.save_uncerts, settings.progress) == (False, True, False)
    # heuristic=random selects at random whatever strategy is set.
    random = AcquisitionSettings.from_config(
        replace(cfg, heuristic="random"), torch.device("cpu"), None, tmp_path
    )
    assert random.strategy == STRATEGIES["random"]


@pytest.mark.parametrize("kind", ["image", "region"])
def test_one_acquire_serves_both_units(kind: str, tmp_path: Path) -> None:
    image, region = units([0, 1])
    unit = image if kind == "image" else region
    settings = acquisition_settings(tmp_path)
    model = ConstantModel()
    probs_seen: list[int] = []
    acquired = acquire(
        unit,
        settings,
        model,
        model,
        MCSettings(2, 1, torch.device("cpu"), None),
        cycle=0,
        on_probs=lambda index, probs: probs_seen.append(index),
    )
    assert sorted(probs_seen) == [2, 3, 4, 5]  # every pool image, by train index
    assert unit.n_labelled() == 4  # what acquire picked is labelled
    # Image i's foreground logit is 4 * (10 i / 255): entropy falls as i grows, so the most
    # uncertain image of each group is the lowest-numbered one left, 2 (group 0) and 3 (1).
    assert {a["name"] for a in acquired} == {"img_2", "img_3"}
    # Each pick is recorded with its own score: the entropy of p = sigmoid(4 * 10 i / 255),
    # the same at every pixel, so for the image and each of its tiles alike.
    for pick in acquired:
        p = 1 / (1 + math.exp(-4 * 10 * int(pick["name"][4:]) / 255))
        entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
        assert pick["score"] == pytest.approx(entropy, rel=1e-5)


class CentreModel(ConstantModel):
    """ConstantModel's foreground logit plus |row - 12| / 4 + |col - 12| / 4: every tile of an
    image scores differently from the tiles that mirror it, the uncertain ones near (12, 12)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = (torch.arange(x.shape[2]) - 12).abs()[:, None] / 4
        cols = (torch.arange(x.shape[3]) - 12).abs()[None, :] / 4
        logits = super().forward(x)
        return torch.cat([logits[:, :1], logits[:, 1:] + rows + cols], 1)


def test_region_acquire_picks_each_grades_best_tiles_with_their_own_scores(
    tmp_path: Path,
) -> None:
    def tile_entropy(image: int, box: list[int]) -> float:  # CentreModel's entropy, by hand
        y0, y1, x0, x1 = box
        rows, cols = np.abs(np.arange(y0, y1) - 12) / 4, np.abs(np.arange(x0, x1) - 12) / 4
        p = 1 / (1 + np.exp(-(4 * 10 * image / 255 + rows[:, None] + cols[None, :])))
        return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))

    _, region = units([0, 1])
    expected = {  # every tile of images 2-5
        (image, tile): tile_entropy(image, list(region.regions.boxes[image][tile]))
        for image, tile in region.regions.pool()
    }
    acquired = acquire(
        region,
        acquisition_settings(tmp_path),
        CentreModel(),
        CentreModel(),
        MCSettings(2, 1, torch.device("cpu"), None),
        cycle=0,
    )
    for pick in acquired:
        image = int(pick["name"][4:])
        assert pick["score"] == pytest.approx(expected[(image, pick["region"])], rel=1e-5)
        assert pick["box"] == list(region.regions.boxes[image][pick["region"]])
        assert region.annotated(image)[pick["box"][0], pick["box"][2]]  # now labelled
    for grade in (0, 1):
        ranked = sorted((s for (i, _), s in expected.items() if i % 2 == grade), reverse=True)
        taken = [a["score"] for a in acquired if int(a["name"][4:]) % 2 == grade]
        assert taken and sorted(taken, reverse=True) == pytest.approx(ranked[: len(taken)])


def test_the_configured_reduction_scores_each_pool_image(tmp_path: Path) -> None:
    image, _ = units([0, 1])
    settings = replace(
        acquisition_settings(tmp_path),
        reduction="topq",
        reduction_settings=ReductionSettings(topq_percent=10.0),
    )
    mc = MCSettings(2, 1, torch.device("cpu"), None)
    acquired = acquire(image, settings, CentreModel(), CentreModel(), mc, cycle=0)
    for pick in acquired:
        index = int(pick["name"][4:])
        height, width = SHAPES[index]
        rows, cols = np.abs(np.arange(height) - 12) / 4, np.abs(np.arange(width) - 12) / 4
        p = 1 / (1 + np.exp(-(4 * 10 * index / 255 + rows[:, None] + cols[None, :])))
        entropy = np.sort(-(p * np.log(p) + (1 - p) * np.log(1 - p)), axis=None)[::-1]
        top = entropy[: round(height * width / 10)].mean()  # the 10 % most uncertain pixels
        assert pick["score"] == pytest.approx(top, rel=1e-5)
        assert pick["score"] > entropy.mean() * 1.01  # not the mean reduction's score


class NoisyModel(ConstantModel):
    """ConstantModel's logits plus seeded noise: MC samples that disagree, as under dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return logits + torch.randn(logits.shape)


@pytest.mark.parametrize("kind", ["image", "region"])
def test_the_configured_heuristic_scores_the_pool(kind: str, tmp_path: Path) -> None:
    def scores(heuristic: str) -> list[float]:
        image, region = units([0, 1])
        settings = replace(acquisition_settings(tmp_path), heuristic=heuristic)
        torch.manual_seed(0)  # the same MC samples for every heuristic
        model = NoisyModel()
        mc = MCSettings(4, 1, torch.device("cpu"), None)
        picked = acquire(image if kind == "image" else region, settings, model, model, mc, 0)
        return [a["score"] for a in picked]

    entropy = scores("entropy")
    assert scores("entropy") == entropy  # seeded: the same samples give the same scores
    assert scores("bald") != entropy


class SampleModel(CentreModel):
    """CentreModel's logits shifted by a known amount at each MC sample t (its call count mod
    T): MC probabilities that a test can rebuild exactly, without any random draw."""

    shifts = (-1.0, 0.5, 1.5, -0.25)

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = self.shifts[self.calls % len(self.shifts)]
        self.calls += 1
        logits = super().forward(x)
        return torch.cat([logits[:, :1], logits[:, 1:] + shift], 1)


@pytest.mark.parametrize("heuristic", ["bald", "entropy", "variance", "variance_edt"])
def test_each_heuristic_scores_the_pool_with_its_own_pixel_map(
    heuristic: str, tmp_path: Path
) -> None:
    from heuristics import PIXEL_MAPS

    image, _ = units([0, 1])
    settings = replace(acquisition_settings(tmp_path), heuristic=heuristic)
    mc = MCSettings(len(SampleModel.shifts), 1, torch.device("cpu"), None)
    acquired = acquire(image, settings, SampleModel(), SampleModel(), mc, cycle=0)
    for pick in acquired:
        index = int(pick["name"][4:])
        height, width = SHAPES[index]
        logit = CentreModel()(torch.full((1, 3, height, width), 10 * index / 255))[:, 1]
        foreground = torch.stack([logit + s for s in SampleModel.shifts], -1)  # [1, H, W, T]
        probs = torch.stack([1 - foreground.sigmoid(), foreground.sigmoid()], 1)
        expected = PIXEL_MAPS[heuristic](probs).mean().item()  # [1, 2, H, W, T] -> map -> mean
        assert pick["score"] == pytest.approx(expected, rel=1e-4, abs=1e-7)
        assert pick["score"] > 0


class NonFiniteModel(ConstantModel):
    """Logits that overflowed: NaN for every pixel of every image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * torch.nan


class NonFiniteFeatureModel(ConstantModel):
    """Finite predictions, but a bottleneck that overflowed."""

    def forward(self, x: torch.Tensor, return_features: bool = False):
        logits = super().forward(x)
        if not return_features:
            return logits
        return logits, torch.full((x.shape[0], 3, *x.shape[2:]), torch.nan)


@pytest.mark.parametrize("kind", ["image", "region"])
@pytest.mark.parametrize(
    ("model", "strategy", "message"),
    [
        (NonFiniteModel(), "topk", r"pool scores are not finite at cycle 3.*precision=fp32"),
        (NonFiniteFeatureModel(), "coreset", r"pool features are not finite at cycle 3.*fp32"),
    ],
)
def test_non_finite_scores_or_features_are_refused_before_anything_is_labelled(
    kind: str, model: ConstantModel, strategy: str, message: str, tmp_path: Path
) -> None:
    image, region = units([0, 1])
    unit = image if kind == "image" else region
    before = unit.labelled_pixels()
    settings = replace(acquisition_settings(tmp_path), strategy=STRATEGIES[strategy])
    mc = MCSettings(2, 1, torch.device("cpu"), None)
    with pytest.raises(UserError, match=message):
        acquire(unit, settings, model, model, mc, cycle=3)
    assert unit.labelled_pixels() == before and unit.n_labelled() == 2
