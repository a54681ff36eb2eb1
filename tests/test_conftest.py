"""The suite's own machinery in ``conftest.py``."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import made_once


def test_made_once_fills_a_folder_once_and_shares_it(tmp_path: Path) -> None:
    class Factory:  # the one method of pytest's TempPathFactory that made_once uses
        def getbasetemp(self) -> Path:
            return tmp_path / "popen-gw0"

    (tmp_path / "popen-gw0").mkdir()
    calls: list[Path] = []

    def make(folder: Path) -> None:
        calls.append(folder)
        (folder / "made").write_text(str(len(calls)))

    first = made_once(Factory(), "shared", make)
    second = made_once(Factory(), "shared", make)
    assert first == second and len(calls) == 1 and (first / "made").read_text() == "1"
    # Under xdist the folder sits beside the workers' own basetemps, where every worker finds it.
    expected = tmp_path if os.environ.get("PYTEST_XDIST_WORKER") else tmp_path / "popen-gw0"
    assert first == expected / "shared"
