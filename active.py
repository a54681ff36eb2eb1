"""Deep Bayesian active learning for histology segmentation (GlaS, MoNuSeg or your own images).

    python active.py with heuristic=bald run=0      # one run of the original study
    python active.py with demo                      # small synthetic run, about 30 s on a CPU
    python active.py print_config                   # every key and its value
    python active.py suggest with dataset=folder data_path=my_slides   # what to outline next
    python -m utils.config                          # every key with its meaning
    python active.py -F runs with heuristic=bald    # also record the run with Sacred

Each cycle resets the UNet to its initial weights, trains it on the labelled images, tests it by
MC-dropout model averaging, scores the unlabelled pool with the heuristic and labels the best.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

# sacred imports pkg_resources, whose deprecation warning says nothing to our users.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from sacred import Experiment  # noqa: E402
from sacred.run import Run  # noqa: E402

from utils.config import NAMED_CONFIGS, ExperimentConfig, defaults, unknown_key  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.loop.run import run_active_learning  # noqa: E402
from utils.loop.suggest import suggest as suggest_images  # noqa: E402

T = TypeVar("T")

ex = Experiment("active_learning", save_git_info=False)


class _RoutineSacredNotices(logging.Filter):
    """Drop Sacred's routine notices, which would bury our one-line error messages.

    "No observers" is the normal case without ``-F``; "Failed after" repeats what the error line
    (or, for a real crash, Sacred's traceback) already says; "Changed type" comes before our own
    check of every value's type, which refuses a wrong one in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        routine = ("No observers have been added", "Failed after", "Changed type of config entry")
        return not message.startswith(routine)


def _experiment_logger() -> logging.Logger:
    logger = logging.getLogger("active_learning")
    logger.setLevel(logging.WARNING)  # Sacred's INFO lines add nothing to our progress output
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))
        handler.addFilter(_RoutineSacredNotices())
        logger.addHandler(handler)
    return logger


ex.logger = _experiment_logger()


ex.add_config({k: v for k, v in defaults().items() if k != "seed"})
for _name, _updates in NAMED_CONFIGS.items():
    ex.add_named_config(_name, _updates)


@ex.config
def seed_from_run(run):
    seed = run  # Sacred's own seed follows run, so that a rerun is the same run


def _refusals_in_one_line(command: Callable[..., T]) -> Callable[..., T]:
    """A refusal (``UserError``: bad config, data or state) ends the command with its one line
    and exit code 2 instead of a traceback; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapped


@ex.main
@_refusals_in_one_line
def main(_config: dict, _run: Run) -> list[float]:
    dice = run_active_learning(
        ExperimentConfig.from_mapping(_config),
        log_scalar=_run.log_scalar,
        add_artifact=lambda path: _run.add_artifact(str(path)),
    )
    return [round(float(d), 4) for d in dice]


@ex.command
@_refusals_in_one_line
def suggest(_config: dict) -> str:
    """Rank the unmasked images of a dataset=folder folder for labelling (docs/data.md, 'Your own
    images'); writes results_dir/suggest/."""
    return str(suggest_images(ExperimentConfig.from_mapping(_config)))


def refuse_unknown_keys(argv: list[str]) -> None:
    """Sacred would refuse a misspelt key in three lines of its own, without the likely fix.
    Only the ``KEY=VALUE`` updates after ``with`` are checked, up to Sacred's own options."""
    after_with = argv[argv.index("with") + 1 :] if "with" in argv else []
    for token in after_with:
        if token.startswith("-"):  # --loglevel=INFO, -c "a comment", ...
            return
        assignment = re.match(r"([A-Za-z_]\w*)(?:\.[\w.]*)?=", token)
        problem = unknown_key(assignment[1]) if assignment and assignment[1] != "seed" else None
        if problem:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            raise SystemExit(2)


if __name__ == "__main__":
    refuse_unknown_keys(sys.argv)
    ex.run_commandline()
