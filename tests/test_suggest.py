"""``active.py suggest``: a folder with half its masks removed gets ranked suggestions, overlays,
QuPath GeoJSON and reusable weights; seeded; a new mask or training setting retrains, a scoring
setting only rescores; boxes end on the original edges; one results folder serves one data
folder; bad input is refused in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import utils.loop.suggest as suggest_module
from active import ex
from data.folder import save_png
from tests.conftest import tiny_config
from tests.test_folder import make_folder
from utils.config import ConfigError, ExperimentConfig
from utils.loop.device import describe_machine, resolve_precision
from utils.loop.run import run_active_learning
from utils.loop.suggest import _original_box


def half_masked(root: Path, **folder_options) -> tuple[Path, list[str]]:
    folder = make_folder(root, n=10, groups=True, **folder_options)
    pool = [f"img_{i:02d}" for i in range(1, 10, 2)]
    for name in pool:
        (folder / "masks" / f"{name}.png").rename(root / f"{name}.mask.png")
    return folder, pool


def suggest(folder: Path, results: Path, **updates) -> None:
    config = tiny_config(folder, folder / "splits", results, dataset="folder", n_suggest=3)
    del config["splits_path"]
    config.update(updates)
    ex.run("suggest", config_updates=config)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_suggestions_are_written_seeded_and_reuse_the_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, pool = half_masked(tmp_path / "slides")
    overlays: list[tuple[float, float]] = []  # (the map's maximum, the overlay's white)
    save_overlay = suggest_module._save_overlay

    def recording_overlay(path, image, maps, box, top):
        overlays.append((float(maps[1].max()), top))
        save_overlay(path, image, maps, box, top)

    monkeypatch.setattr("utils.loop.suggest._save_overlay", recording_overlay)
    suggest(folder, tmp_path / "a")
    monkeypatch.undo()
    # One scale for every overlay: white is the highest uncertainty among the suggested images.
    assert len(overlays) == 3 and {top for _, top in overlays} == {max(m for m, _ in overlays)}
    out = tmp_path / "a" / "suggest"
    rows = read_rows(out / "suggestions.csv")
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert {r["image"] for r in rows} <= set(pool) and len({r["image"] for r in rows}) == 3
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)  # topk: best first
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [
        f"{r['rank'].zfill(2)}_{r['image']}.png" for r in rows
    ]
    for row in rows:
        geojson = json.loads((out / "geojson" / f"{row['image']}.geojson").read_text())
        assert geojson["type"] == "FeatureCollection"
        ring = geojson["features"][0]["geometry"]["coordinates"][0]
        assert ring == [[0, 0], [64, 0], [64, 48], [0, 48], [0, 0]]  # the whole image
    weights = (out / "model.pt").stat().st_mtime_ns
    said = capsys.readouterr().out
    assert f"5 labelled images in {folder}, 5 images to rank" in said
    assert "training for 2 epochs (no saved weights)" in said

    monkeypatch.chdir(folder.parent)  # nothing changed, the folder written another way
    suggest(folder, tmp_path / "a", data_path=f"{folder.name}/")  # same weights and suggestions
    said = capsys.readouterr().out
    assert "reusing" in said and "another setup" not in said
    assert (out / "model.pt").stat().st_mtime_ns == weights
    assert read_rows(out / "suggestions.csv") == rows
    suggest(folder, tmp_path / "b")  # trained afresh from the same seed
    assert read_rows(tmp_path / "b" / "suggest" / "suggestions.csv") == rows

    first = rows[0]["image"]  # the user outlines the first suggestion: it leaves the pool
    (tmp_path / "slides" / f"{first}.mask.png").rename(folder / "masks" / f"{first}.png")
    capsys.readouterr()
    suggest(folder, tmp_path / "a")
    said = capsys.readouterr().out
    assert "reusing" not in said
    assert "(the masks, images or training settings changed)" in said
    assert first not in {r["image"] for r in read_rows(out / "suggestions.csv")}
    suggest(folder, tmp_path / "a", n_suggest=10)  # more than the 4 left
    last = capsys.readouterr().out.splitlines()[-1]
    assert "wrote 4 suggestions to" in last and "(n_suggest=10, but the pool holds no more)" in last


def test_scoring_settings_rescore_and_training_settings_retrain(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, _ = half_masked(tmp_path / "slides")
    suggest(folder, tmp_path / "a")
    out = tmp_path / "a" / "suggest"
    capsys.readouterr()
    scoring = {"heuristic": "entropy", "n_suggest": 2, "mc_iters": 3, "reduction": "topq"}
    suggest(folder, tmp_path / "a", **scoring)
    said = capsys.readouterr().out
    assert f"labels and settings unchanged: reusing {out / 'model.pt'}" in said, said
    assert "training for" not in said
    assert len(read_rows(out / "suggestions.csv")) == 2  # rescored with the new settings
    changed = "(the masks, images or training settings changed)"
    for training in ({"epochs": 3}, {"epochs": 3, "lr": 0.05}):  # each change retrains
        suggest(folder, tmp_path / "a", **scoring, **training)
        said = capsys.readouterr().out
        assert "reusing" not in said and f"training for 3 epochs {changed}" in said, said


@pytest.mark.parametrize(
    "size",
    [
        (36, 52),  # smaller than the others: the crops shrink to fit it
        (96, 128),  # larger: the crops stay, but the mean image size that sets a region epoch grows
    ],
    ids=["smaller", "larger"],
)
def test_a_pool_image_that_changes_training_retrains_as_a_fresh_folder_would(
    size: tuple[int, int], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, _ = half_masked(tmp_path / "slides")
    options = {"patch_size": [40, 40], "label_unit": "region", "region_size": [16, 16]}
    suggest(folder, tmp_path / "a", **options)
    rng = np.random.default_rng(1)
    save_png(folder / "images" / "img_new.png", rng.integers(0, 255, (*size, 3), np.uint8))
    capsys.readouterr()
    suggest(folder, tmp_path / "a", **options)
    said = capsys.readouterr().out
    assert "reusing" not in said and "(the masks, images or training settings changed)" in said
    suggest(folder, tmp_path / "b", **options)
    assert read_rows(tmp_path / "a" / "suggest" / "suggestions.csv") == read_rows(
        tmp_path / "b" / "suggest" / "suggestions.csv"
    )


def test_weights_that_do_not_load_are_trained_afresh_from_the_seeded_start(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, _ = half_masked(tmp_path / "slides")
    suggest(folder, tmp_path / "b")
    suggest(folder, tmp_path / "a")
    weights = tmp_path / "a" / "suggest" / "model.pt"
    state = torch.load(weights, weights_only=True)
    # Another code version's weights: the first tensors fit, then a key is missing.
    torch.save(dict(list(state.items())[:-1]), weights)
    capsys.readouterr()
    suggest(folder, tmp_path / "a")
    said = capsys.readouterr().out
    assert "reusing" not in said and "(model.pt does not load: " in said, said
    assert "Missing key(s)" in said.split("does not load: ")[1].splitlines()[0]
    assert read_rows(tmp_path / "a" / "suggest" / "suggestions.csv") == read_rows(
        tmp_path / "b" / "suggest" / "suggestions.csv"
    )
    weights.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")  # not a torch file
    suggest(folder, tmp_path / "a")
    assert "(model.pt does not load: " in capsys.readouterr().out
    (tmp_path / "a" / "suggest" / "model.json").write_text('{"fingerprint": ')
    with pytest.raises(SystemExit):
        suggest(folder, tmp_path / "a")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.json is unreadable; delete" in lines[0], lines


def test_a_call_cut_short_or_running_beside_another_leaves_the_last_files_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from utils.runs.lock import run_lock

    folder, _ = half_masked(tmp_path / "slides")
    suggest(folder, tmp_path / "a")
    out = tmp_path / "a" / "suggest"

    def files() -> dict[str, bytes]:
        return {
            str(path.relative_to(out)): path.read_bytes()
            for path in sorted(out.rglob("*"))
            if path.is_file() and path.suffix != ".lock"
        }

    before = files()
    assert len([name for name in before if name.startswith("overlays/")]) == 3
    calls = []

    def save_then_fail(*args: object) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # cut short while the second overlay is written
        original(*args)

    original = suggest_module._save_overlay
    monkeypatch.setattr(suggest_module, "_save_overlay", save_then_fail)
    with pytest.raises(KeyboardInterrupt):
        suggest(folder, tmp_path / "a", n_suggest=2, heuristic="entropy")
    monkeypatch.undo()
    assert files() == before and len(calls) == 2
    capsys.readouterr()
    with run_lock(out / "suggest.lock"), pytest.raises(SystemExit):
        suggest(folder, tmp_path / "a", n_suggest=2)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "suggest is already running in process" in lines[0], lines
    assert files() == before


def test_a_call_cut_short_while_scoring_keeps_the_new_weights_and_the_last_suggestions(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, pool = half_masked(tmp_path / "slides")
    suggest(folder, tmp_path / "a")
    out = tmp_path / "a" / "suggest"
    last = {
        str(path.relative_to(out)): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.parts[-2] in ("overlays", "geojson")
    }
    last["suggestions.csv"] = (out / "suggestions.csv").read_bytes()
    new = pool[0]  # outlined: the next call retrains
    (tmp_path / "slides" / f"{new}.mask.png").rename(folder / "masks" / f"{new}.png")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt  # cut short once the weights are trained and saved

    monkeypatch.setattr(suggest_module, "acquire", interrupted)
    with pytest.raises(KeyboardInterrupt):
        suggest(folder, tmp_path / "a")
    monkeypatch.undo()
    assert new in json.loads((out / "model.json").read_text())["labelled"]
    assert {name: (out / name).read_bytes() for name in last} == last
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(
        name.split("/")[1] for name in last if name.startswith("overlays/")
    )
    capsys.readouterr()
    suggest(folder, tmp_path / "a")  # the saved weights are those of the new labels
    assert "reusing" in capsys.readouterr().out
    suggest(folder, tmp_path / "b")
    rows = read_rows(out / "suggestions.csv")
    assert new not in {r["image"] for r in rows}
    assert rows == read_rows(tmp_path / "b" / "suggest" / "suggestions.csv")


def test_suggest_refuses_semi_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, _ = half_masked(tmp_path / "slides")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        suggest(folder, tmp_path / "a", semi="pseudo")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "suggest trains on the labelled images only, not with" in lines[0]


def test_weights_from_another_setup_are_reused_and_said_to_be(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = half_masked(tmp_path / "slides")
    suggest(folder, tmp_path / "a", device="cpu")
    out = tmp_path / "a" / "suggest"
    here = describe_machine(torch.device("cpu"), resolve_precision("auto", torch.device("cpu")))
    assert json.loads((out / "model.json").read_text())["machine"] == here
    rows = read_rows(out / "suggestions.csv")

    elsewhere = {**here, "cpu": "Another CPU", "precision": "float16"}
    monkeypatch.setattr(suggest_module, "describe_machine", lambda device, dtype: elsewhere)
    capsys.readouterr()
    suggest(folder, tmp_path / "a", device="cpu")
    said = capsys.readouterr().out
    assert "reusing" in said
    assert f"cpu: {here['cpu']} -> Another CPU" in said
    assert f"precision: {here['precision']} -> float16" in said
    assert "torch" not in said.split("another setup")[1].split("delete")[0]  # unchanged keys
    assert read_rows(out / "suggestions.csv") == rows  # the saved weights still score


def test_an_overlay_draws_uncertainty_on_the_given_scale(tmp_path: Path) -> None:
    image = torch.full((3, 4, 6), 100, dtype=torch.uint8)
    foreground = np.full((4, 6), 0.5)
    uncertainty = np.zeros((4, 6))
    uncertainty[1, 2], uncertainty[2, 3] = 0.2, 0.8  # above ``top``: clipped to white
    path = tmp_path / "overlay.png"
    suggest_module._save_overlay(path, image, (foreground, uncertainty), [0, 2, 0, 2], top=0.4)
    canvas = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # A 4x6 image is enlarged 48 times, to a shorter side of 192 pixels, under a title strip.
    zoom, title = 48, suggest_module.OVERLAY_TITLE
    height, width = 4 * zoom, 6 * zoom
    assert canvas.shape == (title + height, 3 * width + 8, 3)
    assert (canvas[:title, :, :] < 255).any()  # the titles are drawn
    panel = canvas[title:, 2 * (width + 4) :, 1]  # green: the red outline has none
    centre = zoom // 2  # of each enlarged pixel, away from the outline
    assert panel[zoom + centre, 2 * zoom + centre] == 127
    assert panel[2 * zoom + centre, 3 * zoom + centre] == 255
    assert panel[3 * zoom + centre, 5 * zoom + centre] == 0
    # P(foreground) 0.5 outside the box
    assert (canvas[title + 2 * zoom :, width + 4 + 2 * zoom : 2 * width + 4, :] == 127).all()
    assert tuple(canvas[title, 2 * (width + 4)]) == (255, 0, 0)  # the box's corner, 3rd panel
    corner = (title + 2 * zoom - 1, 2 * (width + 4) + 2 * zoom - 1)
    assert tuple(canvas[corner]) == (255, 0, 0)  # the box's far corner, enlarged with it


def test_region_suggestions_carry_their_boxes(tmp_path: Path) -> None:
    folder, pool = half_masked(tmp_path / "slides")
    suggest(folder, tmp_path / "r", label_unit="region", region_size=[16, 16])
    out = tmp_path / "r" / "suggest"
    rows = read_rows(out / "suggestions.csv")
    assert rows and list(rows[0]) == ["rank", "image", "score", "region", "y0", "y1", "x0", "x1"]
    assert {r["image"] for r in rows} <= set(pool)
    boxes = [[int(r[k]) for k in ("y0", "y1", "x0", "x1")] for r in rows]
    assert all(y1 - y0 == 16 and x1 - x0 == 16 for y0, y1, x0, x1 in boxes)
    feature = json.loads((out / "geojson" / f"{rows[0]['image']}.geojson").read_text())
    y0, y1, x0, x1 = boxes[0]
    assert feature["features"][0]["geometry"]["coordinates"][0][2] == [x1, y1]
    assert len(list((out / "overlays").iterdir())) == len(rows)


def test_nothing_labelled_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = make_folder(tmp_path / "slides", n=4)
    for path in (folder / "masks").iterdir():
        path.unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        suggest(folder, tmp_path / "a")
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "holds no masks, so nothing is labelled" in lines[0], lines


def test_boxes_at_a_reduced_scale_end_on_the_original_edges(tmp_path: Path) -> None:
    # 75 x 101 at image_scale=0.5 is 38 x 50: scaling the edges back by 2 alone gives 76 x 100.
    folder, pool = half_masked(tmp_path / "slides", sizes=((75, 101),))
    suggest(folder, tmp_path / "a", image_scale=0.5)
    for row in read_rows(tmp_path / "a" / "suggest" / "suggestions.csv"):
        geojson = json.loads(
            (tmp_path / "a/suggest/geojson" / f"{row['image']}.geojson").read_text()
        )
        ring = geojson["features"][0]["geometry"]["coordinates"][0]
        assert ring == [[0, 0], [101, 0], [101, 75], [0, 75], [0, 0]]
    # Regions of 32 x 32 original pixels, 16 x 16 on the scaled image: every tile suggested.
    regions = {"label_unit": "region", "region_size": [32, 32], "n_suggest": 100}
    suggest(folder, tmp_path / "r", image_scale=0.5, **regions)
    out = tmp_path / "r" / "suggest"
    rows = read_rows(out / "suggestions.csv")
    rings = {
        feature["properties"]["rank"]: feature["geometry"]["coordinates"][0]
        for path in (out / "geojson").iterdir()
        for feature in json.loads(path.read_text())["features"]
    }
    assert len(rows) == len(rings) == 6 * len(pool)  # 2 x 3 tiles of each 38 x 50 image
    for row in rows:  # the table's box is the GeoJSON's, in the original image's pixels
        y0, y1, x0, x1 = (int(row[k]) for k in ("y0", "y1", "x0", "x1"))
        assert rings[int(row["rank"])] == [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    assert max(int(r["y1"]) for r in rows) == 75 and max(int(r["x1"]) for r in rows) == 101


def test_a_box_on_the_scaled_edge_maps_to_the_original_edge() -> None:
    scaled, original = (38, 50), (75, 101)
    assert _original_box([0, 38, 0, 50], scaled, original) == [0, 75, 0, 101]
    # Inside, by the ratio of the sides, starts down and ends up: 16 * 75 / 38 = 31.6 -> 31,
    # 32 * 75 / 38 = 63.2 -> 64; 16 * 101 / 50 = 32.3 -> 32, 32 * 101 / 50 = 64.6 -> 65.
    assert _original_box([16, 32, 16, 32], scaled, original) == [31, 64, 32, 65]
    assert _original_box([32, 38, 48, 50], scaled, original) == [63, 75, 96, 101]


@pytest.mark.parametrize("scale", [0.25, 0.4, 0.9, 1.5, 2.0])
def test_a_mask_over_the_original_box_labels_the_scaled_region_whole(scale: float) -> None:
    """The loader's nearest-neighbour resize of a mask annotated over exactly the original box
    reads only annotated pixels inside the scaled box, for every tile of 20- and 82-pixel grids
    on the scaled image (rounding to the nearest original pixel misses some at 1.5 and 2)."""
    from data.segmentation import resize_pair

    original = (258, 236)
    image = Image.new("RGB", original[::-1])
    height, width = resize_pair(image, np.zeros(original, dtype=np.uint8), scale)[1].shape
    boxes = [
        [y0, min(y0 + tile, height), x0, min(x0 + tile, width)]
        for tile in (20, 82)
        for y0 in range(0, height, tile)
        for x0 in range(0, width, tile)
    ]
    for box in boxes:
        a0, a1, b0, b1 = _original_box(box, (height, width), original)
        mask = np.zeros(original, dtype=np.uint8)
        mask[a0:a1, b0:b1] = 1
        read = resize_pair(image, mask, scale)[1][box[0] : box[1], box[2] : box[3]]
        assert read.all(), (scale, box, [a0, a1, b0, b1])


def test_fewer_region_suggestions_than_asked_are_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, _ = half_masked(tmp_path / "slides")
    capsys.readouterr()
    # 48 x 64 in tiles of 20 x 20: the edge tiles take the remainder, so are larger.
    suggest(folder, tmp_path / "r", label_unit="region", region_size=[20, 20], n_suggest=4)
    rows = read_rows(tmp_path / "r" / "suggest" / "suggestions.csv")
    out = capsys.readouterr().out
    assert len(rows) < 4 and "n_suggest=4 is a budget of 1,600 pixels" in out, out
    covered = sum(
        (int(r["y1"]) - int(r["y0"])) * (int(r["x1"]) - int(r["x0"])) for r in rows
    )  # tiles: their boxes are their pixels
    assert "until the next region would overrun it, and " in out
    assert out.rstrip().endswith(f"cover {covered:,}") or out.rstrip().endswith(
        f"covers {covered:,}"
    )
    assert f"wrote {len(rows)} suggestion{'' if len(rows) == 1 else 's'} to" in out


def test_a_results_dir_that_cannot_be_made_is_one_line_before_any_image_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = half_masked(tmp_path / "slides")
    (tmp_path / "a_file").write_text("not a folder")
    loaded = []
    monkeypatch.setattr(suggest_module, "ImageStore", lambda *args: loaded.append(1))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        suggest(folder, tmp_path / "a_file")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    fragment = f"results_dir={tmp_path / 'a_file'} cannot be created or written"
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not loaded


def test_another_folder_keeps_its_suggestions_and_a_moved_one_is_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first, _ = half_masked(tmp_path / "first")
    second, _ = half_masked(tmp_path / "second", seed=1)  # the same names, other pixels
    out = tmp_path / "results/suggest"
    suggest(first, tmp_path / "results")
    written = (out / "suggestions.csv").read_bytes()
    weights = (out / "model.pt").stat().st_mtime_ns

    def refused(folder: Path) -> list[str]:
        capsys.readouterr()
        with pytest.raises(SystemExit):
            suggest(folder, tmp_path / "results")
        return [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    lines = refused(second)
    assert len(lines) == 1 and f"holds the suggestions for {first.resolve()}" in lines[0], lines
    assert (out / "suggestions.csv").read_bytes() == written

    moved = first.rename(tmp_path / "renamed")
    lines = refused(second)  # the first folder is gone, but these are not its images
    assert len(lines) == 1 and f"holds the suggestions for {first.resolve()}" in lines[0], lines
    suggest(moved, tmp_path / "results")
    said = capsys.readouterr().out
    assert f"{first.resolve()} is gone and {moved} holds its labelled images" in said
    assert "reusing" in said
    assert (out / "model.pt").stat().st_mtime_ns == weights
    assert (out / "suggestions.csv").read_bytes() == written
    saved = json.loads((out / "model.json").read_text())
    assert saved["data_path"] == str(moved.resolve())
    # A manifest from before the images' digests is not taken for changed labels.
    del saved["labelled_images"]
    (out / "model.json").write_text(json.dumps({**saved, "fingerprint": "0" * 64}))
    suggest(moved, tmp_path / "results")
    assert "(model.json was written by an older version of suggest)" in capsys.readouterr().out


def test_an_image_too_small_for_the_scale_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, pool = half_masked(tmp_path / "slides")
    save_png(folder / "images" / f"{pool[1]}.png", np.zeros((20, 24, 3), np.uint8))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        suggest(folder, tmp_path / "a")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"leaves the smallest image, {pool[1]}, 20 pixels on a side" in lines[0]
    assert f"or leave {pool[1]} out" in lines[0]


def test_a_mask_of_one_region_labels_that_region_only(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, pool = half_masked(tmp_path / "slides")
    image = pool[0]  # the pathologist outlined its top-left 16 x 16 region, and only that
    true_mask = np.asarray(Image.open(tmp_path / "slides" / f"{image}.mask.png"))
    partial = np.full_like(true_mask, 255)
    partial[:16, :16] = true_mask[:16, :16]
    save_png(folder / "masks" / f"{image}.png", partial)
    regions = {"label_unit": "region", "region_size": [16, 16], "n_suggest": 40}
    capsys.readouterr()
    with pytest.raises(SystemExit):  # 255 is no class without unannotated_value
        suggest(folder, tmp_path / "a", **regions)
    assert "set unannotated_value=255" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # whole images cannot be partly labelled
        suggest(folder, tmp_path / "a", unannotated_value=255)
    assert "use label_unit=region to learn from part of an image" in capsys.readouterr().err

    suggest(folder, tmp_path / "a", unannotated_value=255, **regions)
    assert "labelled: 5 images whole, 1 region of 1 partial mask" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "a" / "suggest" / "model.json").read_text())
    assert manifest["regions_of_partial_masks"] == {image: [0]}
    rows = read_rows(tmp_path / "a" / "suggest" / "suggestions.csv")
    # 40 of the 5 pool images' 12 tiles each, and the 11 left of the outlined one: region 0 of
    # the outlined image is labelled, its other regions are in the pool.
    suggested = {(r["image"], int(r["region"])) for r in rows}
    assert len(rows) == 40 and (image, 0) not in suggested
    assert {r for i, r in suggested if i == image} <= set(range(1, 12))
    assert {r["image"] for r in rows} <= set(pool)
    assert image in manifest["labelled"] and len(manifest["labelled"]) == 6

    # One pixel short of the region: the mask labels nothing, and the user is told.
    partial[15, 15] = 255
    save_png(folder / "masks" / f"{image}.png", partial)
    suggest(folder, tmp_path / "a", unannotated_value=255, **regions)
    out = capsys.readouterr().out
    assert (
        f"warning: {folder / 'masks' / image}.png annotates no region of region_size=[16, 16]"
        in out
    )
    manifest = json.loads((tmp_path / "a" / "suggest" / "model.json").read_text())
    assert manifest["regions_of_partial_masks"] == {image: []}


def test_a_part_annotated_folder_needs_a_whole_region(tmp_path: Path, capsys) -> None:
    folder = make_folder(tmp_path / "slides", n=4)
    for path in (folder / "masks").iterdir():  # every mask annotates a 10 x 10 corner only
        partial = np.full((48, 64), 255, np.uint8)
        partial[:10, :10] = 0
        save_png(path, partial)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        suggest(
            folder, tmp_path / "a", unannotated_value=255, label_unit="region", region_size=[16, 16]
        )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert (
        len(lines) == 1
        and "no region of region_size=[16, 16] at image_scale=1.0 is annotated" in lines[0]
    )


def test_a_simulated_run_refuses_unannotated_pixels(synthetic_root: Path, tmp_path: Path) -> None:
    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path)
    with pytest.raises(ConfigError, match="unannotated_value is for `active.py suggest`"):
        run_active_learning(ExperimentConfig.from_mapping({**config, "unannotated_value": 255}))
