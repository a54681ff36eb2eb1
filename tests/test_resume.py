"""Interrupted runs resume exactly; finished runs are not redone; nothing is silently mixed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import utils.loop.run
from active import ex
from tests.conftest import tiny_config
from utils.io import atomic_save_json, atomic_write
from utils.loop.device import describe_machine, resolve_precision
from utils.loop.training import NonFiniteLossError
from utils.runs.records import load_results

ROOT = Path(__file__).resolve().parents[1]


def cli_args(config: dict) -> list[str]:
    return [sys.executable, "active.py", "with"] + [f"{k}={v!r}" for k, v in config.items()]


def cycles_done(results_dir: Path, stem: str = "bald_0") -> int:
    state = results_dir / f"{stem}.state.json"
    return json.loads(state.read_text())["cycles_done"] if state.exists() else 0


# One kill per thing a resumed cycle must restore: the labelled images; the pool's
# pseudo-labels, which the next cycle trains on (a loose threshold, so that the tiny model's are
# not empty); the labelled regions.
@pytest.mark.parametrize(
    ("stem", "updates"),
    [
        ("bald_0", {}),
        ("bald+pseudo_0", {"semi": "pseudo", "pseudo_threshold": 0.69}),
        ("bald-region_0", {"label_unit": "region", "region_size": [16, 16]}),
    ],
)
def test_sigkill_then_rerun_gives_the_uninterrupted_result(
    synthetic_root: Path, tmp_path: Path, stem: str, updates: dict
) -> None:
    data, splits = synthetic_root / "GlaS", synthetic_root / "splits"
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    config = tiny_config(data, splits, killed_dir, epochs=3, al_cycles=3, **updates)
    process = subprocess.Popen(
        cli_args(config), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300  # generous: a busy machine may take minutes per cycle
    while (
        cycles_done(killed_dir, stem) < 1 and process.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = cycles_done(killed_dir, stem)
    assert 1 <= done < 4, "the run must be killed part-way for this test to mean anything"
    assert np.load(killed_dir / f"{stem}.npy").shape == (done,)  # finished cycles are kept

    resumed = subprocess.run(cli_args(config), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {stem} after cycle {done - 1}" in resumed.stdout
    assert "warning" not in resumed.stdout  # the same machine and settings as before the kill
    ex.run(config_updates={**config, "results_dir": str(clean_dir)})  # uninterrupted
    assert (killed_dir / f"{stem}.npy").read_bytes() == (clean_dir / f"{stem}.npy").read_bytes()
    killed_record = json.loads((killed_dir / f"{stem}.json").read_text())
    clean_record = json.loads((clean_dir / f"{stem}.json").read_text())
    assert killed_record["acquired"] == clean_record["acquired"]
    assert killed_record["labelled_pixels"] == clean_record["labelled_pixels"]
    assert killed_record["complete"] and len(killed_record["test_dice"]) == 4
    assert not list(killed_dir.glob("*.npz")), "a finished run keeps no pseudo-labels"
    (machine,) = killed_record["machines"]  # one entry, read back from the state and extended
    assert machine["cycles"] == [0, 3]


def test_resume_refuses_a_split_that_changed_since_the_run_began(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from tests.test_active import expect_exit

    splits = tmp_path / "splits"
    shutil.copytree(synthetic_root / "splits", splits)
    results = tmp_path / "results"
    config = tiny_config(synthetic_root / "GlaS", splits, results, al_cycles=1, epochs=1)
    ex.run(config_updates=config)
    state_path = results / "bald_0.state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "finished": False}))  # as if killed before the end
    # Swap two train images: labelled_map, by position, would now label other images; two
    # validation or test images: the cycles to come would select or test on other terms.
    for split in ("train", "val", "test"):
        original = (splits / f"{split}.csv").read_text()
        header, first, second, *rest = original.splitlines()
        (splits / f"{split}.csv").write_text("\n".join([header, second, first, *rest]) + "\n")
        expect_exit(config, capsys, f"bald_0: the {split} split is not the one this run began on")
        (splits / f"{split}.csv").write_text(original)
    capsys.readouterr()
    ex.run(config_updates=config)
    assert "resuming bald_0 after cycle 1" in capsys.readouterr().out  # the same split resumes


def test_finished_run_is_reported_not_redone(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(
        synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, al_cycles=1, epochs=1
    )
    ex.run(config_updates=config)
    before = (tmp_path / "bald_0.npy").stat().st_mtime_ns
    capsys.readouterr()
    result = ex.run(config_updates=config)
    assert "bald_0 is already complete" in capsys.readouterr().out
    assert (tmp_path / "bald_0.npy").stat().st_mtime_ns == before
    assert result.result == [round(float(d), 4) for d in np.load(tmp_path / "bald_0.npy")]
    # Moved to another results_dir with its state, it is the same run there.
    moved = tmp_path / "moved"
    moved.mkdir()
    for suffix in (".npy", ".json", ".state.json"):
        (moved / f"bald_0{suffix}").write_bytes((tmp_path / f"bald_0{suffix}").read_bytes())
    capsys.readouterr()
    ex.run(config_updates={**config, "results_dir": str(moved)})
    assert "bald_0 is already complete" in capsys.readouterr().out
    # Moved unfinished, it continues there, and its record says where it now is.
    state = json.loads((moved / "bald_0.state.json").read_text())
    history = {key: values[:1] for key, values in state["history"].items()}  # after cycle 0
    atomic_save_json(
        moved / "bald_0.state.json",
        {**state, "history": history, "cycles_done": 1, "finished": False},
    )
    # Figures asked for only now: the record says so, as it says where the run now is (the last
    # cycle acquires nothing, so none are drawn).
    ex.run(config_updates={**config, "results_dir": str(moved), "save_maps": True})
    assert "resuming bald_0 after cycle 0" in capsys.readouterr().out
    record = json.loads((moved / "bald_0.json").read_text())
    assert record["complete"] and record["config"]["results_dir"] == str(moved)
    assert record["config"]["save_maps"] is True
    assert np.load(moved / "bald_0.npy").tolist() == np.load(tmp_path / "bald_0.npy").tolist()
    # Published without its state (as docs/results holds runs), it is still complete, not redone;
    # an unfinished one starts afresh.
    (tmp_path / "bald_0.state.json").unlink()
    capsys.readouterr()
    ex.run(config_updates=config)
    assert "bald_0 is already complete" in capsys.readouterr().out
    assert (tmp_path / "bald_0.npy").stat().st_mtime_ns == before
    record = json.loads((tmp_path / "bald_0.json").read_text())
    # A record without the flag is complete, as the report reads it.
    atomic_save_json(tmp_path / "bald_0.json", {k: v for k, v in record.items() if k != "complete"})
    ex.run(config_updates=config)
    assert "bald_0 is already complete" in capsys.readouterr().out
    atomic_save_json(tmp_path / "bald_0.json", {**record, "complete": False})
    ex.run(config_updates=config)
    assert "already complete" not in capsys.readouterr().out
    assert (tmp_path / "bald_0.npy").stat().st_mtime_ns != before


def test_the_record_says_where_each_cycle_ran(
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    config = tiny_config(
        synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, al_cycles=2, epochs=1
    )
    ex.run(config_updates=config)
    here = describe_machine(torch.device("cpu"), resolve_precision("auto", torch.device("cpu")))
    record = json.loads((tmp_path / "bald_0.json").read_text())
    assert record["machines"] == [{**here, "cycles": [0, 2]}]
    assert here["threads"] == torch.get_num_threads() and here["torch"] == torch.__version__

    # Moved after cycle 0 to a machine with another processor: it continues, says so, and
    # its record keeps both machines with the cycles each ran.
    moved = tmp_path / "moved"
    moved.mkdir()
    state = json.loads((tmp_path / "bald_0.state.json").read_text())
    history = {key: values[:1] for key, values in state["history"].items()}
    history["machines"] = [{**here, "cycles": [0, 0]}]
    atomic_save_json(
        moved / "bald_0.state.json",
        {**state, "history": history, "cycles_done": 1, "finished": False},
    )
    elsewhere = {**here, "cpu": "Another CPU", "threads": here["threads"] + 1}
    monkeypatch.setattr(utils.loop.run, "describe_machine", lambda device, dtype: elsewhere)
    capsys.readouterr()
    ex.run(config_updates={**config, "results_dir": str(moved)})
    out = capsys.readouterr().out
    assert (
        f"warning: bald_0's cycles so far ran under another machine or other settings (cpu: "
        f"{here['cpu']} -> Another CPU; threads: {here['threads']} -> {here['threads'] + 1})"
    ) in out
    record = json.loads((moved / "bald_0.json").read_text())
    assert record["machines"] == [
        {**here, "cycles": [0, 0]},
        {**elsewhere, "cycles": [1, 2]},
    ]

    # A state from before records said where: those cycles are unknown, not this machine's.
    # Nor did it count pixels, time cycles or score classes: a list that would cover only the
    # resumed cycle is written empty, and the report reads the run.
    per_cycle_since = ("machines", "labelled_pixels", "labelled_fraction", "seconds")
    history = {k: v[:2] for k, v in state["history"].items() if k not in per_cycle_since}
    del history["test_dice_per_class"]
    older = tmp_path / "older"
    older.mkdir()
    atomic_save_json(
        older / "bald_0.state.json",
        {**state, "history": history, "cycles_done": 2, "finished": False},
    )
    capsys.readouterr()
    ex.run(config_updates={**config, "results_dir": str(older)})
    assert "warning" not in capsys.readouterr().out  # nothing to compare with
    record = json.loads((older / "bald_0.json").read_text())
    assert record["machines"] == [
        {"unknown": True, "cycles": [0, 1]},
        {**elsewhere, "cycles": [2, 2]},
    ]
    lists = ("labelled_pixels", "labelled_fraction", "seconds_per_cycle", "test_dice_per_class")
    assert {key: record[key] for key in lists} == dict.fromkeys(lists, [])
    (run,) = load_results(older)["bald"]
    assert run.labelled_fraction is None and len(run.dice) == 3


def test_other_config_is_refused_unless_overwrite(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(
        synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, al_cycles=1, epochs=1
    )
    ex.run(config_updates=config)
    original = (tmp_path / "bald_0.npy").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        ex.run(config_updates={**config, "epochs": 2, "lr": 0.05})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "epochs: 1 -> 2" in err and "lr: 0.1 -> 0.05" in err
    assert "overwrite=True" in err
    assert (tmp_path / "bald_0.npy").read_bytes() == original
    # With its data folder missing as well, the folder is named instead: the clash's way out
    # (another results_dir, or overwrite=True) would only lead there.
    missing = tmp_path / "no_such_data"
    with pytest.raises(SystemExit):
        ex.run(config_updates={**config, "epochs": 2, "data_path": str(missing)})
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "another config" not in err, err
    ex.run(config_updates={**config, "epochs": 2, "overwrite": True})
    record = json.loads((tmp_path / "bald_0.json").read_text())
    assert record["config"]["epochs"] == 2


def test_an_unreadable_state_is_refused_in_one_line_unless_overwrite(tmp_path: Path) -> None:
    from utils.runs.state import ResumeError, RunPaths, load_state

    paths = RunPaths(tmp_path, "bald_0")
    paths.state.write_text('{"cycles_done": 1')  # cut off mid-write by another tool
    with pytest.raises(ResumeError, match="is unreadable .*pass overwrite=True"):
        load_state(paths, {"heuristic": "bald"}, overwrite=False)
    assert load_state(paths, {"heuristic": "bald"}, overwrite=True) is None


def test_results_without_a_state_are_this_runs_only_if_their_record_says_so(
    tmp_path: Path,
) -> None:
    from utils.io import atomic_save_npy
    from utils.runs.state import ResumeError, RunPaths, load_state

    paths = RunPaths(tmp_path, "bald_0")
    config = {"heuristic": "bald", "epochs": 2}
    # Killed after writing cycle 0's results, before its state: start afresh.
    atomic_save_npy(paths.npy, np.array([0.5]))
    atomic_save_json(paths.json, {"config": config, "complete": False})
    assert load_state(paths, config, overwrite=False) is None
    # Without the flag the record is a finished run's, and one that lacks its history is named.
    atomic_save_json(paths.json, {"config": config})
    with pytest.raises(ResumeError, match="bald_0.json has no 'n_labelled' to rebuild"):
        load_state(paths, config, overwrite=False)
    atomic_save_json(paths.json, {"config": config, "complete": False})
    # Another config's results are refused naming the key, results with no record as such.
    with pytest.raises(ResumeError, match=r"holds bald_0 with another config \(epochs: 2 -> 3\)"):
        load_state(paths, {**config, "epochs": 3}, overwrite=False)
    paths.json.unlink()
    with pytest.raises(ResumeError, match="has no bald_0.state.json .* delete it and bald_0.json"):
        load_state(paths, config, overwrite=False)


def test_a_run_killed_while_saving_its_first_cycle_starts_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import utils.runs.state as state_module
    from utils.runs.state import History, RunPaths, RunState, load_state, save_cycle

    paths = RunPaths(tmp_path, "bald_0")
    config = {"heuristic": "bald", "run": 0, "epochs": 2}
    history = History(
        n_labelled=[4], test_dice=[0.5], acquired=[[]], test_dice_per_image=[{}], train=[{}]
    )
    state = RunState(config=config, labelled_map=[], history=history, cycles_done=1)
    writes = []

    def killed_after_one_write(write):
        def written(*args):
            if writes:
                raise KeyboardInterrupt  # the kill, between the cycle's first file and the next
            writes.append(write(*args))

        return written

    for name in ("atomic_save_npy", "atomic_save_json"):
        monkeypatch.setattr(state_module, name, killed_after_one_write(getattr(state_module, name)))
    with pytest.raises(KeyboardInterrupt):
        save_cycle(paths, state)
    monkeypatch.undo()
    assert len(writes) == 1 and not paths.state.exists()
    # Not refused: the run, and every sweep it is in, starts it again.
    assert load_state(paths, config, overwrite=False) is None


def test_a_record_left_without_results_is_removed_when_the_run_starts_afresh(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(
        synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, al_cycles=0, epochs=1
    )
    # What a kill between the first cycle's record and its results leaves: no .npy, no state.
    record = tmp_path / "bald_0.json"
    atomic_save_json(record, {"config": config, "complete": False})
    real_cycle = utils.loop.run.run_cycle
    seen = []

    def noting_the_record(cfg, setup, cycle, *args):
        seen.append((cycle, record.exists()))
        return real_cycle(cfg, setup, cycle, *args)

    monkeypatch.setattr(utils.loop.run, "run_cycle", noting_the_record)
    ex.run(config_updates=config)
    assert seen == [(0, False)], "the report refuses the folder while the stale record is there"
    assert json.loads(record.read_text())["complete"]


def test_a_finished_runs_deleted_results_or_record_are_rewritten_from_its_state(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(
        synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, al_cycles=0, epochs=1
    )
    ex.run(config_updates=config)
    npy, record = tmp_path / "bald_0.npy", tmp_path / "bald_0.json"
    results, written = npy.read_bytes(), json.loads(record.read_text())
    for deleted in (npy, record):
        deleted.unlink()
        capsys.readouterr()
        ex.run(config_updates=config)
        out = capsys.readouterr().out
        assert f"bald_0: rewrote {deleted.name} from bald_0.state.json" in out
        assert "bald_0 is already complete" in out
        assert npy.read_bytes() == results  # JSON keeps every float64 exactly
        assert json.loads(record.read_text()) == written
    assert len(load_results(tmp_path)["bald"]) == 1


class Killed(Exception):
    """A kill, raised where a test needs one."""


def test_pseudo_labels_a_kill_left_behind_are_removed(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(
        synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, epochs=1, semi="pseudo"
    )
    real_save = utils.loop.run.save_cycle

    def killed_after_saving_cycle_1(paths, state):
        real_save(paths, state)
        if state.cycles_done == 2:
            raise Killed  # before cycle 0's pseudo-labels are deleted

    monkeypatch.setattr(utils.loop.run, "save_cycle", killed_after_saving_cycle_1)
    with pytest.raises(Killed):
        ex.run(config_updates=config)
    stem = "bald+pseudo_0"
    left = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert left == [f"{stem}.pseudo-0.npz", f"{stem}.pseudo-1.npz"]
    monkeypatch.setattr(utils.loop.run, "save_cycle", real_save)
    another_run = tmp_path / f"{stem}1.pseudo-0.npz"
    another_run.write_bytes(b"")
    ex.run(config_updates=config)  # resumes from cycle 1's, and ends
    assert cycles_done(tmp_path, stem) == 3
    assert sorted(tmp_path.glob("*.npz")) == [another_run]
    # A finished run killed before deleting its last pseudo-labels: removed when it is rerun.
    (tmp_path / f"{stem}.pseudo-1.npz").write_bytes(b"")
    ex.run(config_updates=config)
    assert sorted(tmp_path.glob("*.npz")) == [another_run]


def test_nan_loss_stops_and_keeps_last_good_cycle(
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_train = utils.loop.run.train_model
    calls = []

    def diverge_on_second_cycle(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise NonFiniteLossError("training loss became nan at epoch 1; lower lr")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(utils.loop.run, "train_model", diverge_on_second_cycle)
    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, epochs=1)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        ex.run(config_updates=config)
    assert "error: training loss became nan" in capsys.readouterr().err
    assert cycles_done(tmp_path) == 1
    assert np.load(tmp_path / "bald_0.npy").shape == (1,)
    monkeypatch.setattr(utils.loop.run, "train_model", real_train)
    ex.run(config_updates=config)  # the same command resumes from the good cycle
    assert np.load(tmp_path / "bald_0.npy").shape == (3,)


def test_a_real_nan_is_caught_in_training(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(
        synthetic_root / "GlaS",
        synthetic_root / "splits",
        tmp_path,
        lr=float("inf"),
        precision="fp32",
        epochs=2,
    )
    capsys.readouterr()
    with pytest.raises(SystemExit):
        ex.run(config_updates=config)
    assert "training loss became nan" in capsys.readouterr().err
    assert not (tmp_path / "bald_0.npy").exists()


def test_a_nan_validation_loss_stops_instead_of_keeping_untrained_weights(
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import utils.loop.training

    monkeypatch.setattr(utils.loop.training, "validation_loss", lambda *args: float("nan"))
    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        ex.run(config_updates=config)
    assert "validation loss became nan at epoch 1" in capsys.readouterr().err
    assert not (tmp_path / "bald_0.npy").exists()


def test_interrupted_write_leaves_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    atomic_save_json(target, {"old": True})

    def write_half_then_fail(f) -> None:
        f.write(b'{"new": tr')
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, write_half_then_fail)
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temp file left
