"""MoNuSeg to the folder format: Aperio XML polygons rasterised pixel-exactly, splits written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.folder import open_folder, save_png
from data.glas import SPLITS
from data.monuseg import main, polygons, rasterise

# A 4x4 square with corners (2, 2) and (5, 5), and a right triangle with legs of 4 pixels;
# X and Y as ImageScope writes them (Y down), the last vertex not repeating the first.
XML = """<Annotations MicronsPerPixel="0.252700">
  <Annotation Id="1" Type="4">
    <Attributes/>
    <Regions>
      <RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region"/></RegionAttributeHeaders>
      <Region Id="1" Type="0">
        <Attributes/>
        <Vertices>
          <Vertex X="2" Y="2"/><Vertex X="5" Y="2"/><Vertex X="5" Y="5"/><Vertex X="2" Y="5"/>
        </Vertices>
      </Region>
      <Region Id="2" Type="0">
        <Attributes/>
        <Vertices>
          <Vertex X="10.0" Y="2.0"/><Vertex X="14.0" Y="6.0"/><Vertex X="10.0" Y="6.0"/>
        </Vertices>
      </Region>
    </Regions>
  </Annotation>
</Annotations>
"""

# Interior and outline: with whole-pixel vertices, every pixel whose centre lies in or on it.
EXPECTED = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)


def test_polygons_rasterise_pixel_exactly(tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    xml.write_text(XML)
    shapes = polygons(xml)
    assert shapes == [[(2, 2), (5, 2), (5, 5), (2, 5)], [(10, 2), (14, 6), (10, 6)]]
    assert np.array_equal(rasterise(shapes, (16, 8)), EXPECTED)


def test_fractional_vertices_are_taken_at_the_whole_pixel_below() -> None:
    # The committed MoNuSeg test masks were drawn this way; a pixel-centre rule would fill
    # rows and columns 2-4 only.
    square = [(1.5, 1.5), (4.8, 1.5), (4.8, 4.8), (1.5, 4.8)]
    expected = np.zeros((7, 7), np.uint8)
    expected[1:5, 1:5] = 1
    assert np.array_equal(rasterise([square], (7, 7)), expected)


def fake_monuseg(root: Path, n_train: int = 5) -> Path:
    """The distribution's layout with tiny images: binary train masks, XML test polygons."""
    rng = np.random.default_rng(0)
    source = root / "MoNuSeg"
    for i in range(n_train):
        name = f"TCGA-TR-{i}"
        image = rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)
        path = source / "MoNuSegTrainingData/Tissue_Images" / f"{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        save_png(source / "MoNuSegTrainingData/Binary_masks" / f"{name}.png", EXPECTED)
    test = source / "MoNuSegTestData"
    test.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)).save(
            test / f"TCGA-TE-{i}.tif"
        )
        (test / f"TCGA-TE-{i}.xml").write_text(XML)
    return root


def test_conversion_writes_a_folder_dataset_with_the_test_images_as_test(tmp_path: Path) -> None:
    source = fake_monuseg(tmp_path / "src")
    assert main(["--source", str(source), "--out", str(tmp_path / "out")]) == 0
    data = open_folder(tmp_path / "out", tmp_path / "out" / "splits", num_classes=2)
    names = {split: [r.name for r in data.splits[split]] for split in SPLITS}
    assert names["test"] == ["TCGA-TE-0", "TCGA-TE-1"]
    assert len(names["val"]) == 1 and len(names["train"]) == 4
    store = data.store("test")
    assert all(np.array_equal(m.numpy(), EXPECTED) for m in store.masks)
    assert tuple(store.images[0].shape) == (3, 8, 16)


def test_a_source_without_monuseg_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["--source", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "point --source at MoNuSeg.tar.xz" in err


def test_a_damaged_archive_or_vertex_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "MoNuSeg.tar.xz"
    archive.write_bytes(b"\xfd7zXZ\x00 not really xz")
    assert main(["--source", str(archive), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be extracted" in err, err
    source = fake_monuseg(tmp_path / "src")
    xml = next((source / "MoNuSeg" / "MoNuSegTestData").glob("*.xml"))
    xml.write_text(XML.replace('<Vertex X="5" Y="2"/>', '<Vertex Y="2"/>'))
    assert main(["--source", str(source), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "region '1' has a vertex without numeric X and Y" in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_an_out_whose_parent_cannot_be_written_is_refused_in_one_line(tmp_path: Path) -> None:
    # A parent that is a file fails in staging's mkdir (NotADirectoryError), as an unwritable
    # one does (PermissionError), which a test run as root cannot bring about.
    source = fake_monuseg(tmp_path / "src")
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "MoNuSeg"
    done = subprocess.run(
        [sys.executable, "data/monuseg.py", "--source", str(source), "--out", str(out)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: --out {out} cannot be written (Not a directory: ")
    assert done.stderr.count("\n") == 1


def test_a_conversion_replaces_its_own_folder_whole_and_nothing_else(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import data.monuseg

    source, out = fake_monuseg(tmp_path / "src"), tmp_path / "out"
    assert main(["--source", str(source), "--out", str(out)]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    (out / "images" / "stale.tif").write_bytes(b"from an older conversion")
    assert main(["--source", str(source), "--out", str(out)]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == written

    def cut_short(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(data.monuseg, "rasterise", cut_short)
    with pytest.raises(KeyboardInterrupt):
        main(["--source", str(source), "--out", str(out)])
    monkeypatch.undo()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # A folder dataset of the lab's own looks alike, but was not converted: it is kept.
    (out / ".converted-by-monuseg-py").unlink()
    capsys.readouterr()
    assert main(["--source", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not an earlier conversion" in err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        w for w in written if w != ".converted-by-monuseg-py"
    ]
    # Through a symbolic link, the folder it points to is replaced.
    (tmp_path / "link").symlink_to(tmp_path / "new")
    assert main(["--source", str(source), "--out", str(tmp_path / "link")]) == 0
    assert (tmp_path / "link").is_symlink()
    assert (
        sorted(str(p.relative_to(tmp_path / "new")) for p in (tmp_path / "new").rglob("*"))
        == written
    )
