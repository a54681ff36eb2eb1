"""Monte-Carlo dropout through baal's module patching."""

from __future__ import annotations

import copy

from baal.bayesian.dropout import patch_module
from torch import nn


def mc_dropout_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose dropout layers stay on in eval mode (baal's ``patch_module``).

    Training and validation use the original, deterministic model; only acquisition and test-time
    Bayesian model averaging sample from the copy. In ``eval()`` its BatchNorm layers use their
    running statistics, so the only randomness left is dropout.
    """
    mc_model = patch_module(copy.deepcopy(model), inplace=True)
    return mc_model.eval()
