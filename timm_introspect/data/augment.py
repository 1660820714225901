"""CIFAR augmentation on whole batches of uint8 tensors, for training on a CPU without per-image PIL work.

Images are decoded once (:meth:`timm_introspect.data.images.LabeledImages.pixels`); every step then crops a
random ``size x size`` window out of the reflect-padded batch, flips half of the images horizontally,
and normalizes with the model's mean and std. Randomness comes from torch's global generator, which
``accelerate``'s checkpoints save and restore, so a resumed run draws the same crops and flips.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BatchAugment"]


class BatchAugment(nn.Module):
    """``uint8 (B, C, H, W)`` -> normalized float images; random crop (reflect padding) and flip when training.

    Args:
        mean, std: per-channel normalization in [0, 1] pixel units (timm's data config).
        pad: padding of the random crop (0: no crop).
        flip: flip half of the images horizontally.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad: int = 4, flip: bool = True) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255)
        self.pad, self.flip = pad, flip

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        if not self.training:
            return x
        batch, _, height, width = x.shape
        if self.pad:
            padded = F.pad(x, (self.pad,) * 4, mode="reflect")
            dy = torch.randint(0, 2 * self.pad + 1, (batch,)).to(x.device)
            dx = torch.randint(0, 2 * self.pad + 1, (batch,)).to(x.device)
            rows = (dy[:, None] + torch.arange(height, device=x.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(width, device=x.device))[:, None, None, :]
            channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[torch.arange(batch, device=x.device)[:, None, None, None], channels, rows, cols]
        if self.flip:
            flipped = (torch.rand(batch) < 0.5).to(x.device)
            x = torch.where(flipped[:, None, None, None], x.flip(3), x)
        return x

    def extra_repr(self) -> str:
        return f"pad={self.pad}, flip={self.flip}"
