"""Deep Bayesian active learning for gland segmentation on GlaS.

    python active.py with heuristic=bald run=0      # one run of the original study
    python active.py with demo                      # small synthetic run, about a minute on a CPU
    python active.py print_config                   # every key with its meaning
    python active.py -F runs with heuristic=bald    # also record the run with Sacred

Each cycle resets the UNet to its initial weights, trains it on the labelled images, tests it by
MC-dropout model averaging, scores the unlabelled pool with the heuristic and labels the best.
"""

from __future__ import annotations

import logging
import sys
import warnings

# sacred imports pkg_resources, whose deprecation warning says nothing to our users.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from sacred import Experiment  # noqa: E402
from sacred.run import Run  # noqa: E402

from data.glas import DataError  # noqa: E402
from utils.active_loop import ConfigError, LoopConfig, run_active_learning  # noqa: E402
from utils.run_state import ResumeError  # noqa: E402
from utils.training import NonFiniteLossError  # noqa: E402

ex = Experiment("glas_active_learning", save_git_info=False)


class _RoutineSacredNotices(logging.Filter):
    """Drop Sacred's routine notices, which would bury our one-line error messages.

    "No observers" is the normal case without ``-F``; "Failed after" repeats what the error line
    (or, for a real crash, Sacred's traceback) already says.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("No observers have been added", "Failed after"))


def _experiment_logger() -> logging.Logger:
    logger = logging.getLogger("glas_active_learning")
    logger.setLevel(logging.WARNING)  # Sacred's INFO lines add nothing to our progress output
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))
        handler.addFilter(_RoutineSacredNotices())
        logger.addHandler(handler)
    return logger


ex.logger = _experiment_logger()


@ex.config
def config():
    data_path = "data/GlaS"  # folder with GlaS's train_N.bmp, testA_N.bmp, ... and Grade.csv
    splits_path = "data/splits/glas"  # train.csv / val.csv / test.csv from data/create_splits.py
    synthetic = False  # generate a synthetic GlaS (and its splits) at data_path when absent
    synthetic_size = [96, 128]  # synthetic images' usual [height, width] (1 in 5 is smaller)
    synthetic_counts = [16, 6, 4]  # synthetic train, testA and testB image counts
    image_scale = 1.0  # resize images and masks at load time (0.5, 0.25 for CPU runs)
    patch_size = [416, 416]  # training crop [height, width], shrunk to fit the smallest image
    batch_size = 16  # training patches per step
    n_label_start = 4  # initially labelled train images, balanced benign / malignant
    epochs = 60  # training epochs per cycle (each visits the labelled set 8 times)
    al_cycles = 15  # acquisition cycles after the initial training
    n_data_to_label = 1  # images labelled per cycle (per grade when balance_al)
    mc_iters = 20  # MC-dropout samples T for acquisition and test-time averaging
    mc_samples_per_pass = 0  # MC samples per forward pass; 0 = auto (1 on CPU, 10 on GPU)
    heuristic = "bald"  # bald, entropy, variance, variance_edt, random (or mc, max, rand)
    run = 0  # run index; fixes every seed (initial labelled set, weights, augmentation)
    seed = run  # Sacred's own seed, tied to run so that reruns are identical
    results_dir = "results"  # where {heuristic}_{run}.npy / .json / .state.json are written
    balance_al = True  # acquire n_data_to_label images of each grade per cycle
    num_classes = 2  # segmentation classes: background and gland
    lr = 0.1  # SGD learning rate
    momentum = 0.9  # SGD momentum
    nesterov = True  # Nesterov momentum
    weight_decay = 1e-4  # L2 weight decay
    lr_step_size = 20  # epochs between learning-rate decays (step decay)
    lr_gamma = 0.1  # learning-rate factor at each decay
    dropout = 0.1  # dropout probability after every UNet block (MC dropout at inference)
    base_width = 16  # UNet channels at full resolution (doubled at each of 5 levels)
    device = "auto"  # auto (CUDA when available, else CPU), cpu, cuda or cuda:N
    precision = "auto"  # auto (bf16 where the hardware has it, else fp32), bf16 or fp32
    num_workers = 0  # DataLoader workers for training augmentation (0 = main process)
    full_supervision = False  # train once on the whole train split -> full_{run}.npy
    save_maps = False  # per cycle, PNGs of the acquired images' uncertainty maps
    save_uncerts = False  # per cycle, a PNG of the pool's score distribution
    overwrite = False  # replace results of this heuristic and run made with another config
    progress = True  # tqdm progress bars


@ex.named_config
def demo():
    # Synthetic GlaS, small UNet, few epochs: a complete run in well under a minute on 2 CPU cores.
    data_path = "data/synthetic/GlaS"  # generated when absent
    splits_path = "data/synthetic/splits"  # generated when absent
    synthetic = True  # generate the synthetic GlaS
    patch_size = [64, 64]  # small crops of the small images
    batch_size = 8  # patches per step
    base_width = 8  # a narrow UNet
    epochs = 8  # epochs per cycle
    al_cycles = 4  # acquisition cycles
    mc_iters = 4  # MC samples
    lr_step_size = 6  # decay once near the end of each cycle


@ex.named_config
def full_supervision():
    # Train once on the whole train split: the reference the learning curves aim for.
    full_supervision = True  # train on every train image, no acquisition


@ex.main
def main(_config: dict, _run: Run) -> list[float]:
    try:
        dice = run_active_learning(
            LoopConfig.from_mapping(_config),
            log_scalar=_run.log_scalar,
            add_artifact=lambda path: _run.add_artifact(str(path)),
        )
    except (DataError, ConfigError, ResumeError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return [round(float(d), 4) for d in dice]


if __name__ == "__main__":
    ex.run_commandline()
