"""Pixel counts filled into whole-image records equal those the loop records itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from active import ex
from tests.conftest import tiny_config
from utils.report.pixel_counts import PixelCountError, add_pixel_counts, main

COUNTED = ("label_unit", "labelled_pixels", "labelled_fraction")


def _strip_counts(source: Path, target: Path) -> dict:
    record = json.loads(source.read_text())
    target.write_text(json.dumps({k: v for k, v in record.items() if k not in COUNTED}))
    return record


def test_filled_counts_equal_the_loops_own(synthetic_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for updates in ({"heuristic": "random"}, {"heuristic": "bald", "run": 1}):
        config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", runs, **updates)
        ex.run(config_updates=config)
    full = tiny_config(
        synthetic_root / "GlaS", synthetic_root / "splits", runs, full_supervision=True
    )
    ex.run(config_updates=full)
    old = tmp_path / "old"
    old.mkdir()
    originals = {
        name: _strip_counts(runs / f"{name}.json", old / f"{name}.json")
        for name in ("random_0", "bald_1", "full_0")
    }
    assert sorted(add_pixel_counts(old)) == sorted(originals)
    for name, original in originals.items():
        filled = json.loads((old / f"{name}.json").read_text())
        assert filled == original  # the same counts, and nothing else changed
    assert originals["bald_1"]["labelled_fraction"][0] < originals["bald_1"]["labelled_fraction"][1]
    assert add_pixel_counts(old) == []  # records with counts are left alone


def test_a_record_that_does_not_add_up_is_refused_in_one_line(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    ex.run(
        config_updates=tiny_config(
            synthetic_root / "GlaS", synthetic_root / "splits", runs, al_cycles=1
        )
    )
    old = tmp_path / "old"
    old.mkdir()
    record = _strip_counts(runs / "bald_0.json", old / "bald_0.json")
    record = {k: v for k, v in record.items() if k not in COUNTED}
    record["n_labelled"][1] += 1  # one image more than the initial set and the picks hold
    (old / "bald_0.json").write_text(json.dumps(record))
    before = (old / "bald_0.json").read_text()
    with pytest.raises(PixelCountError, match="cycle 1: .* the record says"):
        add_pixel_counts(old)
    assert main([str(old)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bald_0.json" in err and "\n" not in err
    assert (old / "bald_0.json").read_text() == before  # nothing written
    # A record without the picks, or not JSON at all, is named in one line too.
    (old / "bald_0.json").write_text(json.dumps({**record, "acquired": []}))
    assert main([str(old)]) == 1
    err = capsys.readouterr().err.strip()
    assert "bald_0.json" in err and "lacks what active.py writes" in err and "\n" not in err
    (old / "bald_0.json").write_text('{"config": ')
    assert main([str(old)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: malformed JSON in ") and "\n" not in err
