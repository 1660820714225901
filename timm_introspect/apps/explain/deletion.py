"""Faithfulness by deletion: remove the pixels a map ranks highest and watch the margin z_P - z_Q fall.

For a map of "why P, rather than Q?", the pixels it ranks highest should be those that hold up z_P - z_Q:
removing the top k % of them (filled with the normalization mean, or blurred) should lower the margin
faster than removing k % at random or by another map. :func:`deletion_logits` gives f's logits after each
removal; :func:`margin_auc` the area under a margin curve (lower: the map found what the margin rests on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from ...errors import InvalidArgumentError

__all__ = ["FILLS", "DeletionCurves", "deletion_curves", "deletion_logits", "fill_images", "margin_auc"]

FILLS = ("mean", "blur")


def fill_images(x: torch.Tensor, fill: str, sigma: float | None = None) -> torch.Tensor:
    """What removed pixels become: ``"mean"`` (0 in normalized space: the normalization mean, a gray) or
    ``"blur"`` (a Gaussian blur of the image, sigma default 1/8 of its side)."""
    if fill == "mean":
        return torch.zeros_like(x)
    if fill == "blur":
        sigma = sigma or max(x.shape[-2:]) / 8
        kernel = 2 * int(round(2 * sigma)) + 1
        return gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    raise InvalidArgumentError(f"fill must be one of {', '.join(FILLS)}; got {fill!r}")


def _ranks(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rank of each pixel in its map, 0 = highest; ties (e.g. the zeros ReLU leaves) broken at random."""
    flat = maps.flatten(1).float()
    noise = torch.rand(flat.shape, generator=generator).to(flat.device)
    order = torch.argsort(flat + 1e-6 * noise, dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks.view(maps.shape)


@torch.no_grad()
def deletion_logits(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, fractions: Sequence[float],
                    fill: str = "mean", image: torch.Tensor | None = None, batch_size: int = 500,
                    seed: int = 0) -> torch.Tensor:
    """f's logits ``(M, F, N)`` after removing, for each map ``(M, H, W)``, its top ``fractions`` of pixels.

    Args:
        x: normalized images ``(B, C, H, W)``.
        maps: one map per row, of image ``image[m]`` (default: map m belongs to image m).
        fractions: shares of pixels removed, in [0, 1].
        fill: ``"mean"`` or ``"blur"`` (see :func:`fill_images`).
    """
    if any(not 0 <= f <= 1 for f in fractions):
        raise InvalidArgumentError(f"fractions must lie in [0, 1]; got {list(fractions)}")
    image = torch.arange(len(maps), device=x.device) if image is None else image.to(x.device)
    if maps.shape[-2:] != x.shape[-2:] or maps.dim() != 3 or len(image) != len(maps):
        raise InvalidArgumentError(f"maps {tuple(maps.shape)} must be (M, H, W) at the images' size "
                                   f"{tuple(x.shape[-2:])}, one image index per map")
    ranks = _ranks(maps, torch.Generator().manual_seed(seed)).to(x.device)
    filled = fill_images(x, fill)
    pixels = maps.shape[-2] * maps.shape[-1]
    counts = [round(f * pixels) for f in fractions]
    clean = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])  # nothing removed
    jobs = [(m, k) for m in range(len(maps)) for k in range(len(counts)) if counts[k]]
    out = clean[image][:, None, :].repeat(1, len(counts), 1)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        rows = torch.tensor([m for m, _ in chunk], device=x.device)
        keep = torch.tensor([counts[k] for _, k in chunk], device=x.device)
        mask = (ranks[rows] < keep[:, None, None])[:, None]
        removed = torch.where(mask, filled[image[rows]], x[image[rows]])
        out[rows, torch.tensor([k for _, k in chunk], device=x.device)] = model(removed).to(out.dtype)
    return out


def margin_auc(margins: torch.Tensor, fractions: Sequence[float]) -> torch.Tensor:
    """Per curve ``(M, F)``: the mean margin over the fractions removed (trapezoid rule), ``(M,)``."""
    f = torch.as_tensor(list(fractions), dtype=torch.float64)
    span = (f[-1] - f[0]).clamp_min(1e-12)
    return torch.trapezoid(margins.double(), f, dim=-1) / span


@dataclass
class DeletionCurves:
    """Margin curves z_P - z_Q of one kind of map ``(M, F)`` over ``fractions``."""

    fractions: list[float]
    margins: torch.Tensor

    def relative_auc(self) -> float:
        """Area under the mean margin curve divided by the mean clean margin (1: no fall; lower: faster fall)."""
        mean = self.margins.double().mean(dim=0)
        return float(margin_auc(mean[None] / mean[0], self.fractions)[0])

    def relative(self) -> list[float]:
        """The mean margin after each fraction, over the mean clean margin."""
        mean = self.margins.double().mean(dim=0)
        return (mean / mean[0]).tolist()


def deletion_curves(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, prediction: torch.Tensor,
                    contrast: torch.Tensor, fractions: Sequence[float], fill: str = "mean",
                    image: torch.Tensor | None = None, batch_size: int = 500, seed: int = 0) -> DeletionCurves:
    """:func:`deletion_logits` reduced to the margin ``z_P - z_Q`` of each map's image and contrast class."""
    logits = deletion_logits(model, x, maps, fractions, fill, image, batch_size, seed)
    rows = torch.arange(len(maps), device=logits.device)
    margins = logits[rows, :, prediction.to(logits.device)] - logits[rows, :, contrast.to(logits.device)]
    return DeletionCurves(list(fractions), margins.cpu())
