"""Grad-CAM weights without a backward pass through f: heads that average the map, then act on the mean.

If a head computes ``z = g(mean_s A_s)`` from the final feature map A (global average pooling, then
anything that no longer sees positions: a linear layer, a norm, an MLP, two averaged heads), the gradient
of any loss J at position s is ``(1/HW) dJ/dm`` at every position, so the Grad-CAM weights (its spatial
mean) are ``(1/HW) J_g^T dJ/dz``. For CE(z, Q) that is ``J_g^T (softmax(z) - e_Q) / HW``; with a linear
head ``J_g = W``: the weights of all N contrastive maps come from the forward pass alone.

Whether a head is of this kind is checked, not assumed from its class: its logits must not change when
the map changes with its mean over the patch positions kept (and the prefix tokens changed at will).
Max or attention pooling, or a head that reads the class token, fail that check.
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.classifier import find_classifiers
from .gradients import vjp_weights
from .layout import FeatureLayout, broadcast_mean, patch_mean

__all__ = ["describe_pool", "head_on_mean", "linear_classifier", "pooled_head_reason", "tail_grid"]

_POOLS = {
    "token": "the head reads the class token", "map": "attention pooling", "max": "max pooling",
    "avgmax": "average + max pooling", "catavgmax": "concatenated average and max pooling", "": "no pooling",
}


def describe_pool(model: nn.Module) -> str:
    """How the head pools, from timm's attributes (``global_pool``, ``head.global_pool.pool_type``)."""
    pool = getattr(model, "global_pool", None)
    if isinstance(pool, str):
        return f"global_pool={pool!r}: {_POOLS.get(pool, 'pooling')}"
    if not isinstance(pool, nn.Module):
        pool = getattr(getattr(model, "head", None), "global_pool", None)
    kind = getattr(pool, "pool_type", None)
    if isinstance(kind, str):
        return f"pool_type={kind!r}: {_POOLS.get(kind, 'pooling')}"
    return f"its forward_head ({type(pool).__name__ if isinstance(pool, nn.Module) else type(model).__name__})"


def _tolerance(dtype: torch.dtype) -> float:
    return 1e3 * torch.finfo(dtype).eps


def _mean_free_noise(features: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """Random noise with zero mean over the patch positions (any values on prefix tokens)."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(features.shape, generator=gen, dtype=features.dtype).to(features.device)
    noise = noise * (4 * features.detach().float().std().clamp_min(1e-3)).to(features.dtype)
    if layout.fmt == "NCHW":
        return noise - noise.mean(dim=(2, 3), keepdim=True)
    if layout.fmt == "NHWC":
        return noise - noise.mean(dim=(1, 2), keepdim=True)
    patches = noise[:, layout.prefix:]
    return torch.cat([noise[:, : layout.prefix], patches - patches.mean(dim=1, keepdim=True)], dim=1)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = b.abs().max().clamp_min(1.0)
    return bool(torch.isfinite(a).all()) and bool((a - b).abs().max() <= _tolerance(b.dtype) * scale)


@torch.no_grad()
def pooled_head_reason(model: nn.Module, features: torch.Tensor, layout: FeatureLayout) -> str | None:
    """``None`` if ``model.forward_head`` depends on ``features`` only through their mean over the patch
    positions; otherwise why the closed form does not apply."""
    logits = model.forward_head(features)
    if not isinstance(logits, torch.Tensor) or not torch.isfinite(logits).all():
        return "forward_head gives no finite logits tensor"
    moved = model.forward_head(features + _mean_free_noise(features, layout))
    if _close(moved, logits):
        return None
    change = (moved - logits).abs().max().item()
    return (f"the head is not average pooling followed by a position-free layer ({describe_pool(model)}; its "
            f"logits change by {change:.3g} when the map changes with its mean kept)")


def head_on_mean(model: nn.Module, mean: torch.Tensor, features: torch.Tensor, layout: FeatureLayout,
                 grid: tuple[int, int]) -> torch.Tensor:
    """The head run on a map of size ``grid`` whose every patch position is ``mean`` ``(B, C)``."""
    return model.forward_head(broadcast_mean(mean, features, layout, grid))


@torch.no_grad()
def tail_grid(model: nn.Module, features: torch.Tensor, layout: FeatureLayout) -> tuple[int, int]:
    """The map size to run the head on for ``logits = g(patch mean)`` (a head that passed
    :func:`pooled_head_reason`): 1x1 (one patch token) when that reproduces the logits, else the full map."""
    logits = model.forward_head(features)
    mean = patch_mean(features, layout)
    try:
        if _close(head_on_mean(model, mean, features, layout, (1, 1)), logits):
            return (1, 1)
    except Exception:  # a head that needs the full map size (e.g. a fixed pooling kernel)
        pass
    return layout.grid


def linear_classifier(model: nn.Module, features: torch.Tensor, layout: FeatureLayout,
                      grid: tuple[int, int]) -> str | None:
    """The module path of the classifier whose weight W ``(N, C)`` is the tail's Jacobian (the head is pooling +
    one linear layer), checked on ``features``; else ``None``."""
    try:
        (layer,) = find_classifiers(model)
    except (ValueError, TypeError):
        return None
    weight = layer.weight
    if layer.kind != "linear" or weight.dim() != 2 or weight.shape[1] != layout.channels:
        return None
    mean = patch_mean(features, layout).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = head_on_mean(model, mean, features, layout, grid)
        probs = torch.softmax(logits.detach(), dim=1)
        rows, _ = vjp_weights(logits, mean, torch.arange(logits.shape[1], device=logits.device), probs, lambda g: g)
    if rows.shape[1:] != weight.shape:
        return None
    return layer.name if _close(rows, weight.detach().to(rows.dtype).expand_as(rows)) else None
