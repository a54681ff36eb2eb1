"""Region labelling: tiles, pooling, budget, partial-mask training, resume, report axis."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from active import ex
from data.regions import IGNORE, RegionLabels, box_area, tile_boxes
from heuristics.pixel_budget import most_that_fit, select_within_budget, take_within_budget
from heuristics.reductions import REDUCTIONS, ReductionSettings, context_margin, pool_regions
from heuristics.strategies import STRATEGIES, Selection, Strategy
from tests.conftest import spy_on_coreset, tiny_config
from utils.loop.inference import pool_features
from utils.loop.metrics import soft_dice_loss
from utils.report.cli import main as report_main

ROOT = Path(__file__).resolve().parents[1]


def test_tiles_cover_the_image_once_with_clipped_or_widened_edges() -> None:
    boxes = tile_boxes(10, 7, (4, 3))
    # Rows: 10 = 4 + 4 + 2, the 2-row remainder is half a tile, so it stays a clipped tile.
    # Columns: 7 = 3 + 3 + 1, the 1-column remainder joins the tile before it (4 wide).
    assert boxes[:2] == [(0, 4, 0, 3), (0, 4, 3, 7)]
    assert boxes[-1] == (8, 10, 3, 7)  # bottom-right tile is 2x4
    assert len(boxes) == 6 and sum(box_area(b) for b in boxes) == 70
    cover = np.zeros((10, 7), dtype=int)
    for y0, y1, x0, x1 in boxes:
        cover[y0:y1, x0:x1] += 1
    assert np.all(cover == 1)


def test_covered_regions_are_those_annotated_to_their_last_pixel() -> None:
    labels = RegionLabels([(10, 7)], (4, 3))  # the tiles of the test above
    annotated = np.zeros((10, 7), dtype=bool)
    annotated[0:4, 0:7] = True  # the first row of tiles, whole
    annotated[4:8, 0:2] = True  # two of the next tile's three columns
    assert labels.covered(0, annotated) == [0, 1]
    annotated[4:8, 2] = True
    assert labels.covered(0, annotated) == [0, 1, 2]
    # Superpixels: a region is its own pixels, not its box.
    segments = np.repeat(np.array([[0, 0, 1, 1]]), 4, axis=0)  # two 4x2 halves
    regions = RegionLabels([(4, 4)], (2, 2), [segments])
    assert regions.covered(0, segments == 1) == [1]


def test_no_tile_is_a_sliver_on_a_glas_sized_image() -> None:
    # A GlaS image at quarter scale is 130x194: 32-pixel tiles leave 2-pixel strips on two sides.
    boxes = tile_boxes(130, 194, (32, 32))
    assert len(boxes) == 4 * 6
    assert {y1 - y0 for y0, y1, _, _ in boxes} == {32, 34}
    assert {x1 - x0 for _, _, x0, x1 in boxes} == {32, 34}
    assert tile_boxes(20, 20, (32, 32)) == [(0, 20, 0, 20)]  # one tile, clipped


def test_region_pooling_of_a_hand_made_map() -> None:
    pixel_map = torch.arange(42, dtype=torch.float32).reshape(1, 6, 7)  # rows of 7
    probs = torch.zeros(1, 2, 6, 7, 2)
    probs[:, 0] = 1.0
    boxes = tile_boxes(6, 7, (4, 4))  # (0,4,0,4) (0,4,4,7) (4,6,0,4) (4,6,4,7): clipped edges
    assert boxes == [(0, 4, 0, 4), (0, 4, 4, 7), (4, 6, 0, 4), (4, 6, 4, 7)]
    settings = ReductionSettings(topq_percent=20.0)

    def reduce(name):
        return lambda m, p: REDUCTIONS[name](m, p, settings)

    means = pool_regions(pixel_map, probs, boxes, reduce("mean"))
    # Pixel (r, c) holds 7r + c. Tile 0: row mean 1.5 -> 10.5, column mean 1.5: 12.0.
    assert means.tolist() == pytest.approx([12.0, 15.5, 33.0, 36.5])
    tops = pool_regions(pixel_map, probs, boxes, reduce("topq"))
    # Clipped tile 3 holds 32-34 and 39-41: 20 % of 6 pixels rounds to 1 -> 41.
    assert tops[3] == pytest.approx(41.0)
    assert tops[0] == pytest.approx((24 + 23 + 22) / 3)  # 20 % of 16 pixels rounds to 3


def test_a_regions_foreground_band_comes_from_its_whole_image() -> None:
    # A 1x8 image with a gland at column 4 and a band of 2: the tile of columns 5-7 holds band
    # pixels 5 and 6 although the gland lies outside it. Map value = column index.
    settings = ReductionSettings(foreground_band=2)
    pixel_map = torch.arange(8, dtype=torch.float32).reshape(1, 1, 8)
    probs = torch.zeros(1, 2, 1, 8, 1)
    probs[:, 0] = 1.0
    probs[0, :, 0, 4] = torch.tensor([[0.0], [1.0]])

    def reduce(m, p, mask=None):
        return REDUCTIONS["foreground"](m, p, settings, mask=mask)

    margin = context_margin("foreground", settings)
    assert margin == 2 and context_margin("mean", settings) == 0
    boxes = [(0, 1, 0, 3), (0, 1, 3, 5), (0, 1, 5, 8)]
    scores = pool_regions(pixel_map, probs, boxes, reduce, margin=margin)
    # The band is columns 2-6: column 2 of the first tile, 3-4 of the second, 5-6 of the third.
    assert scores.tolist() == pytest.approx([2.0, 3.5, 5.5])
    # Each equals the reduction over the whole image, masked to the box.
    for (_, _, x0, x1), score in zip(boxes, scores, strict=True):
        box = torch.zeros(1, 1, 8, dtype=torch.bool)
        box[..., x0:x1] = True
        assert float(reduce(pixel_map, probs, mask=box)) == pytest.approx(score)


def test_region_features_pool_the_cells_under_each_box() -> None:
    # A 130x194 image (GlaS at quarter scale) is padded to 160x224: a 5x7 grid of 32-pixel
    # cells, each holding 10 * row + column.
    grid = torch.arange(5)[:, None] * 10.0 + torch.arange(7)[None, :]
    features = grid.expand(2, 5, 7)  # [D=2, h, w]
    pooled = pool_features(features, [(0, 32, 0, 32), (32, 64, 32, 66), (128, 130, 192, 194)], 32)
    # The first box is cell (0, 0) alone; the second spans columns 1-2 of row 1; the clipped
    # corner box is the last cell, which holds padding mostly.
    assert pooled[:, 0].tolist() == [0.0, 11.5, 46.0]
    assert np.array_equal(pooled[:, 0], pooled[:, 1])


def test_budget_counts_pixels_and_no_region_is_labelled_twice() -> None:
    labels = RegionLabels([(10, 12), (8, 12)], (4, 4))
    # 10 rows = 4 + 4 + 2: the third row of tiles is clipped to 2x4 (half a tile, kept).
    assert labels.area((0, 0)) == 16 and labels.area((0, 8)) == 8
    labels.label_image(1)
    assert labels.labelled_pixels() == 96 and len(labels.pool()) == 9
    labels.label([(0, 0), (0, 8)])
    assert labels.labelled_pixels() == 96 + 16 + 8  # tile 8 is clipped to 2x4
    assert (0, 0) not in labels.pool() and len(labels.pool()) == 7
    with pytest.raises(ValueError, match="labelled already"):
        labels.label([(0, 0)])
    mask = labels.annotated(0)
    assert mask.sum() == 24 and mask[:4, :4].all() and mask[8:, 8:].all()
    names = ["a", "b"]
    restored = RegionLabels([(10, 12), (8, 12)], (4, 4))
    restored.restore(labels.to_json(names), names)
    assert restored.labelled == labels.labelled


def _selection_for(scores: np.ndarray, grades: np.ndarray, balance: bool = True):
    def make(k: int) -> Selection:
        return Selection(
            scores=scores,
            grades=grades,
            n_per_step=k,
            balance=balance,
            rng=np.random.default_rng(0),
        )

    return make


def test_most_that_fit_counts_the_cheapest_items() -> None:
    assert most_that_fit(np.array([16.0, 16, 8, 4]), 20) == 2  # 4 + 8 fit, + 16 does not
    assert most_that_fit(np.array([16.0, 16, 8, 4]), 44) == 4  # exactly the whole sum
    assert most_that_fit(np.array([16.0]), 15) == 0


def test_the_budget_takes_the_strategys_first_picks_per_grade() -> None:
    grades = np.array([0, 0, 0, 1, 1, 1])
    costs = np.array([10.0, 10, 5, 10, 3, 3])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    chosen = select_within_budget(STRATEGIES["topk"], _selection_for(scores, grades), costs, 15)
    # Grade 0 in score order: 10 fits, 10 more would make 20 > 15, so it stops there (the
    # cheaper third is not reached: the budget never reorders the strategy's choice).
    # Grade 1: 10 + 3 = 13 fits, + 3 = 16 does not.
    assert chosen.tolist() == [0, 3, 4]
    # Without balance one budget covers the pool: 10 only, 10 + 10 > 15.
    unbalanced = _selection_for(scores, grades, balance=False)
    assert select_within_budget(STRATEGIES["topk"], unbalanced, costs, 15).tolist() == [0]


def test_a_first_pick_larger_than_the_budget_is_taken_alone() -> None:
    # Both grades' best regions cost more than a budget of one 10-pixel tile: each grade still
    # labels its best one, and nothing after it.
    grades = np.array([0, 0, 1, 1])
    costs = np.array([22.5, 4.0, 12.0, 4.0])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    chosen = select_within_budget(STRATEGIES["topk"], _selection_for(scores, grades), costs, 10)
    assert chosen.tolist() == [0, 2]
    # Spent, not short: the strategy is not asked again for more picks.
    assert take_within_budget(np.array([0, 2]), grades, costs, 10, True) == ([0, 2], False)
    unbalanced = _selection_for(scores, grades, balance=False)
    assert select_within_budget(STRATEGIES["topk"], unbalanced, costs, 10).tolist() == [0]


def test_a_grade_that_runs_out_passes_its_budget_on() -> None:
    grades = np.array([0, 1, 1, 1])
    costs = np.array([4.0, 10, 10, 10])
    chosen, short = take_within_budget(np.array([0, 1, 2, 3]), grades, costs, 15, True)
    assert chosen == [0, 1, 2] and not short  # grade 1 gets 15 + 11 left by grade 0
    chosen, short = take_within_budget(np.array([0, 1]), grades, costs, 15, True)
    assert chosen == [0, 1] and short  # grade 1's budget may hold more than it was offered


def test_a_grade_that_runs_out_last_passes_its_budget_back() -> None:
    # Grade 1 (the last) has one region: the pixel of its budget it leaves goes to grade 0,
    # whichever grade is numbered first, as image mode fills a short grade's gap from the others.
    costs = np.ones(5)
    chosen, short = take_within_budget(np.arange(5), np.array([0, 0, 0, 0, 1]), costs, 2, True)
    assert chosen == [0, 1, 2, 4] and not short
    chosen, short = take_within_budget(np.arange(5), np.array([0, 1, 1, 1, 1]), costs, 2, True)
    assert chosen == [0, 1, 2, 3] and not short


def test_a_grade_pays_from_the_spare_budget_only_what_exceeds_its_own() -> None:
    # Three grades in the split, two in the pool: 6 spare pixels. Grade 0 takes 4 of its own 6,
    # then its second 4 with 2 own and 2 spare pixels; grade 1 takes 5 of its own 6, then 5 more
    # with its last own pixel and 4 spare. Charging grade 0 all 4 to the spare would leave 2,
    # too few for grade 1's next pick.
    grades = np.array([0, 0, 1, 1, 1, 1])
    costs = np.array([4.0, 4, 5, 5, 5, 5])
    chosen = take_within_budget(np.arange(6), grades, costs, 6, True, n_groups=3)
    assert chosen == ([0, 1, 2, 3], False)


def test_a_balanced_step_spends_every_grade_of_the_split() -> None:
    # A folder without groups.csv: one grade in the pool, two of the split counted (as image
    # mode's n_groups), so a region step spends two images' worth, as an image step labels two.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    grades = np.zeros(6, dtype=np.int64)
    make = _selection_for(scores, grades)
    image_mode = STRATEGIES["topk"].select(make(2))
    region_mode = select_within_budget(STRATEGIES["topk"], make, np.ones(6), 2)
    assert image_mode.tolist() == region_mode.tolist() == [0, 1, 2, 3]
    # Without balance one budget is spent, as image mode labels n_per_step.
    unbalanced = _selection_for(scores, grades, balance=False)
    assert select_within_budget(STRATEGIES["topk"], unbalanced, np.ones(6), 2).tolist() == [0, 1]


def test_the_strategy_is_asked_again_when_its_picks_do_not_fill_the_budget() -> None:
    asked: list[int] = []

    def exactly_k_per_grade(selection: Selection) -> np.ndarray:
        asked.append(selection.n_per_step)
        return np.concatenate(
            [np.flatnonzero(selection.grades == g)[: selection.n_per_step] for g in (0, 1)]
        )

    grades = np.array([0, 1, 1, 1, 1, 1])
    costs = np.array([4.0, 10, 10, 10, 10, 10])
    chosen = select_within_budget(
        Strategy(exactly_k_per_grade), _selection_for(np.ones(6), grades), costs, 15
    )
    # One 10-pixel region fits 15 per grade, so 2 are asked for; grade 0 runs out and leaves
    # 11 to grade 1, whose 2 picks (20) then all fit: asked again with 4, it takes 2 of them.
    assert asked == [2, 4]
    assert chosen.tolist() == [0, 1, 2]


def test_unannotated_pixels_never_reach_the_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 6, 6, requires_grad=True)
    target = torch.randint(0, 2, (2, 6, 6))
    target[:, :, 3:] = IGNORE  # right half not annotated
    loss = soft_dice_loss(logits, target)
    loss.backward()
    assert torch.all(logits.grad[:, :, :, 3:] == 0)
    assert torch.any(logits.grad[:, :, :, :3] != 0)
    # Whatever the model predicts on an unannotated pixel changes nothing: it is not there.
    changed_logits = logits.detach().clone()
    changed_logits[:, :, :, 3:] = torch.randn(2, 2, 6, 3)
    assert soft_dice_loss(changed_logits, target) == pytest.approx(float(loss.detach()))
    # And it equals the loss of the annotated part alone.
    assert float(loss.detach()) == pytest.approx(
        float(soft_dice_loss(logits[..., :3], target[..., :3]).detach()), rel=1e-6
    )


def test_training_crops_hold_annotation_and_hide_unannotated_labels(synthetic_root: Path) -> None:
    import copy

    from data.glas import ImageStore, read_split
    from data.partial_masks import PartialMaskDataset
    from data.transforms import train_transform

    store = ImageStore(synthetic_root / "GlaS", read_split(synthetic_root / "splits", "train"))
    labels = RegionLabels([tuple(im.shape[1:]) for im in store.images], (16, 16))
    labels.label([(0, 0), (2, 5)])
    altered = copy.copy(store)
    altered.masks = [1 - m for m in store.masks]  # every label flipped...
    for image, tile in [(0, 0), (2, 5)]:  # ...except inside the labelled regions
        y0, y1, x0, x1 = labels.boxes[image][tile]
        altered.masks[image][y0:y1, x0:x1] = store.masks[image][y0:y1, x0:x1]
    samples = []
    for source in (store, altered):
        data = PartialMaskDataset(source, labels, (24, 24), train_transform((24, 24), False), 3072)
        torch.manual_seed(3)
        samples.append([data[i] for i in range(20)])
    for (image_a, mask_a, *_), (image_b, mask_b, *_) in zip(*samples, strict=True):
        assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
        assert (mask_a != IGNORE).any()  # no crop without annotation


def test_training_data_builds_each_images_annotation_once(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from data.glas import ImageStore, read_split
    from data.partial_masks import PartialMaskDataset

    store = ImageStore(synthetic_root / "GlaS", read_split(synthetic_root / "splits", "train"))
    labels = RegionLabels([tuple(im.shape[1:]) for im in store.images], (16, 16))
    labels.label([(0, 0), (0, 1), (0, 7), (2, 5), (2, 6)])
    built = []
    real = RegionLabels.annotated
    monkeypatch.setattr(
        RegionLabels, "annotated", lambda self, image: built.append(image) or real(self, image)
    )
    data = PartialMaskDataset(store, labels, (24, 24), None, 3072)
    assert sorted(built) == [0, 2] and set(data.annotated) == {0, 2}
    assert torch.equal(data.annotated[0], torch.from_numpy(real(labels, 0)))


def test_training_crops_never_write_into_the_stores_masks(synthetic_root: Path) -> None:
    import copy

    from data.glas import ImageStore, read_split
    from data.partial_masks import PartialMaskDataset

    store = ImageStore(synthetic_root / "GlaS", read_split(synthetic_root / "splits", "train"))
    wide = copy.copy(store)  # masks of a loader that keeps int64, where .long() is no copy
    wide.masks = [m.to(torch.int64) for m in store.masks]
    labels = RegionLabels([tuple(im.shape[1:]) for im in store.images], (16, 16))
    labels.label([(0, 0)])
    data = PartialMaskDataset(wide, labels, (24, 24), None, 3072)
    torch.manual_seed(0)
    _, mask, *_ = data[0]
    assert (mask == IGNORE).any()  # the crop hides unannotated pixels...
    assert torch.equal(wide.masks[0], store.masks[0].to(torch.int64))  # ...in its own copy


def region_config(root: Path, results: Path, **updates) -> dict:
    return tiny_config(
        root / "GlaS",
        root / "splits",
        results,
        label_unit="region",
        region_size=[16, 16],
        **updates,
    )


def test_region_run_spends_the_pixels_of_whole_images(synthetic_root: Path, tmp_path: Path) -> None:
    ex.run(config_updates=region_config(synthetic_root, tmp_path / "region"))
    ex.run(
        config_updates=tiny_config(
            synthetic_root / "GlaS", synthetic_root / "splits", tmp_path / "image"
        )
    )
    region = json.loads((tmp_path / "region" / "bald-region_0.json").read_text())
    image = json.loads((tmp_path / "image" / "bald_0.json").read_text())
    assert region["label_unit"] == "region" and image["label_unit"] == "image"
    assert region["labelled_pixels"][0] == image["labelled_pixels"][0]  # same initial images
    spent = np.diff(region["labelled_pixels"])
    image_spent = np.diff(image["labelled_pixels"])
    # The budget is two average images a cycle (one per grade), never exceeded, and a region
    # (at most 23x23 pixels here) short of it at most, per grade.
    pool = region["labelled_pixels"][0] / region["labelled_fraction"][0]
    n_pool = len((synthetic_root / "splits" / "train.csv").read_text().splitlines()) - 1
    budget = 2 * pool / n_pool
    assert np.all(spent <= budget) and np.all(spent > budget - 2 * 23 * 23)
    # Whole images differ in size around the same mean.
    assert abs(spent.sum() - image_spent.sum()) < 0.15 * image_spent.sum()
    chosen = [(a["name"], a["region"]) for cycle in region["acquired"] for a in cycle]
    assert len(chosen) == len(set(chosen))  # never a region twice
    assert all(a["score"] is not None for a in region["acquired"][0])


def test_region_maps_show_each_acquired_image_once(synthetic_root: Path, tmp_path: Path) -> None:
    ex.run(
        config_updates=region_config(
            synthetic_root, tmp_path, al_cycles=1, epochs=1, save_maps=True, save_uncerts=True
        )
    )
    record = json.loads((tmp_path / "bald-region_0.json").read_text())
    folder = tmp_path / "maps" / "bald-region_0" / "cycle_0"
    # Several regions of one image share that image's figure, which outlines them all.
    expected = {f"{a['name']}.png" for a in record["acquired"][0]} | {"pool_scores.png"}
    assert len(record["acquired"][0]) > len(expected) - 1
    assert {p.name for p in folder.iterdir()} == expected
    for png in folder.iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.parametrize("strategy", ["random", "coreset", "suggestive", "stratified_power"])
def test_every_strategy_works_on_regions(
    synthetic_root: Path, tmp_path: Path, strategy: str
) -> None:
    ex.run(config_updates=region_config(synthetic_root, tmp_path, strategy=strategy, al_cycles=1))
    stem = "random-region_0" if strategy == "random" else f"bald-{strategy}-region_0"
    record = json.loads((tmp_path / f"{stem}.json").read_text())
    assert record["complete"] and len(record["acquired"][0]) > 0
    # Each grade gets one average pool image's pixels, up to one region (at most 23x23 here).
    rows = (synthetic_root / "splits" / "train.csv").read_text().splitlines()[1:]
    grade_of = {row.split(",")[0].removesuffix(".bmp"): int(row.split(",")[2]) for row in rows}
    budget = record["labelled_pixels"][0] / record["labelled_fraction"][0] / len(rows)
    spent = {0: 0, 1: 0}
    for item in record["acquired"][0]:
        y0, y1, x0, x1 = item["box"]
        spent[grade_of[item["name"]]] += (y1 - y0) * (x1 - x0)
    assert all(budget - 23 * 23 < pixels <= budget for pixels in spent.values()), spent


def _cli(config: dict) -> list[str]:
    return [sys.executable, "active.py", "with"] + [f"{k}={v!r}" for k, v in config.items()]


def _write(directory: Path, name: str, run: int, fraction, dice, unit: str, n=None) -> None:
    np.save(directory / f"{name}_{run}.npy", np.asarray(dice, dtype=float))
    record = {
        "name": name,
        "config": {"heuristic": name.split("-")[0], "run": run},
        "label_unit": unit,
        "n_labelled": n or list(range(4, 4 + 2 * len(dice), 2)),
        "test_dice": dice,
        "labelled_fraction": fraction,
    }
    (directory / f"{name}_{run}.json").write_text(json.dumps(record))


def test_report_of_region_runs_uses_the_pixel_axis(tmp_path: Path) -> None:
    for run, shift in ((0, 0.0), (1, 0.02)):
        # Region runs touch more images than they fill, so n_labelled can stay flat.
        _write(
            tmp_path,
            "bald-region",
            run,
            [0.1, 0.2, 0.3],
            [0.5 + shift, 0.8 + shift, 0.9],
            "region",
            n=[4, 9, 9],
        )
        _write(tmp_path, "random", run, [0.1, 0.2, 0.3], [0.5, 0.6 + shift, 0.7], "image")
    _write(tmp_path, "full", 0, [1.0], [0.9], "image", n=[68])
    assert report_main([str(tmp_path)]) == 0
    rows = {r.split(",")[0]: r.split(",") for r in (tmp_path / "summary.csv").read_text().split()}
    header = rows.pop("heuristic")
    bald = dict(zip(header, rows["bald-region"], strict=True))
    random = dict(zip(header, rows["random"], strict=True))
    # AULC over the fraction axis: trapezoids / span 0.2, by hand.
    run0 = ((0.5 + 0.8) / 2 * 0.1 + (0.8 + 0.9) / 2 * 0.1) / 0.2
    run1 = ((0.52 + 0.82) / 2 * 0.1 + (0.82 + 0.9) / 2 * 0.1) / 0.2
    assert float(bald["aulc_mean"]) == pytest.approx((run0 + run1) / 2, abs=1e-4)
    # 95 % of full supervision (0.9) is 0.855: the mean curve 0.81, 0.9 reaches it at 0.3.
    assert float(bald["pixels_to_95"]) == pytest.approx(0.3)
    assert random["pixels_to_95"] == "" and bald["labels_to_95"] == ""
    assert bald["p_vs_random"] != ""  # paired against whole-image random


def test_a_region_run_cut_short_is_paired_over_the_cycles_both_reached(tmp_path: Path) -> None:
    _write(tmp_path, "bald-region", 0, [0.1, 0.2], [0.5, 0.8], "region", n=[4, 9])
    _write(tmp_path, "bald-region", 1, [0.1, 0.2, 0.3], [0.5, 0.7, 0.8], "region", n=[4, 9, 9])
    _write(tmp_path, "random", 0, [0.1, 0.2, 0.3], [0.5, 0.6, 0.9], "image")
    _write(tmp_path, "random", 1, [0.1, 0.2, 0.3], [0.5, 0.6, 0.7], "image")
    assert report_main([str(tmp_path)]) == 0
    rows = {r.split(",")[0]: r.split(",") for r in (tmp_path / "summary.csv").read_text().split()}
    bald = dict(zip(rows.pop("heuristic"), rows["bald-region"], strict=True))
    # Pair 0 over the fractions 0.1-0.2 that both reached: 0.65 - 0.55 (random's whole curve,
    # 0.65, would give 0); pair 1 over 0.1-0.3: 0.675 - 0.6. Mean +0.0875.
    assert float(bald["aulc_diff"]) == pytest.approx(0.0875, abs=1e-4)


def test_report_refuses_image_runs_without_pixel_counts_next_to_region_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _write(tmp_path, "bald-region", 0, [0.1, 0.2], [0.5, 0.6], "region")
    _write(tmp_path, "random", 0, [], [0.5, 0.6], "image")
    assert report_main([str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "random_0 has no labelled_fraction" in err and "utils.report.pixel_counts" in err


@pytest.mark.parametrize(
    ("updates", "fragment"),
    [
        ({"label_unit": "pixel"}, "label_unit must be one of image, region"),
        ({"region_size": [4, 4]}, "region_size must be [height, width] with both >= 8"),
        ({"region_size": [400, 400]}, "(height x width), larger than image train_"),
    ],
)
def test_bad_region_input_is_one_line(
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    updates: dict,
    fragment: str,
) -> None:
    config = {**region_config(synthetic_root, tmp_path), **updates}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        ex.run(config_updates=config)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]


def test_region_coreset_compares_pool_and_labelled_regions_in_one_deterministic_model(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, selections = spy_on_coreset(monkeypatch, "region_features", "score_regions")
    ex.run(config_updates=region_config(synthetic_root, tmp_path, strategy="coreset", al_cycles=1))
    (pool_call, labelled_call), (selection,) = calls, selections
    assert pool_call[0] is labelled_call[0]  # one model for both sets ...
    assert not any(type(m).__module__.startswith("baal") for m in pool_call[0].modules())
    assert selection.features.shape[0] == pool_call[1] == len(selection.grades)
    assert selection.labelled_features.shape[0] == labelled_call[1] > 0  # ... dropout off
