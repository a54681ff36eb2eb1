"""UNet (Ronneberger et al. 2015, arXiv 1505.04597) with dropout after every block.

The dropout layers are what baal's MC-dropout patch turns into a Bayesian approximation
(Gal & Ghahramani 2016): in ``models.mc_dropout`` they stay active at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers followed by spatial dropout."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            # Channel-wise dropout gives spatially coherent MC samples, not salt-and-pepper noise.
            nn.Dropout2d(dropout),
        )


class UNet(nn.Module):
    """Encoder-decoder with ``depth`` stride-2 levels and skip connections.

    Accepts any input size: the input is padded to a multiple of ``2**depth`` and the logits are
    cropped back, so GlaS's 775x522 images need no resizing.
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 2,
        base_width: int = 16,
        depth: int = 5,
        dropout: float = 0.1,
    ):
        super().__init__()
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoders.append(ConvBlock(channels, width, dropout))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.decoders.append(ConvBlock(2 * width, width, dropout))
            channels = width
        self.head = nn.Conv2d(channels, n_classes, 1)

    @property
    def feature_cell(self) -> int:
        """Side, in input pixels, of the square that one bottleneck cell covers."""
        return 2**self.depth

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[N, n_classes, H, W]``; with ``return_features`` also the bottleneck
        activations ``[N, D, h, w]`` (D = base_width * 2**depth), which strategies pool into
        per-image features."""
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        bottleneck = skips.pop()  # the bottleneck output is x itself
        for upsample, decoder in zip(self.upsamplers, self.decoders, strict=True):
            x = decoder(torch.cat([upsample(x), skips.pop()], dim=1))
        logits = self.head(x)[..., :height, :width]  # [N, n_classes, H, W]
        return (logits, bottleneck) if return_features else logits
