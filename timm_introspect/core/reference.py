"""The paper's way to get r_x: one image at a time, ``loss.backward()``, read the weight gradient.

This is the slow reference every fast path is checked against (tests, ``benchmarks/``). It uses only
PyTorch's loss functions and autograd, never the closed forms of :mod:`timm_introspect.core.losses`.
"""

from __future__ import annotations

import torch
from torch import nn

from .classifier import find_classifiers
from .losses import introspection_loss

__all__ = ["autograd_features"]


def autograd_features(
    model: nn.Module,
    x: torch.Tensor,
    loss: str = "mse",
    target: float = 1.0,
    one_image_per_forward: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-sample dJ/dW of each classifier weight by autograd, one image per backward pass.

    Args:
        model: a timm classifier in eval mode.
        x: ``(B, C, H, W)`` images.
        loss: one of :data:`timm_introspect.LOSSES`.
        target: the constant c of the target ``c * 1_N``.
        one_image_per_forward: run f on each image alone (the paper's way). With ``False``, f runs
            once on the batch and each image's loss is back-propagated on its own: the same
            gradients, free of f's own batch-vs-single rounding (large for some random-init nets).

    Returns:
        A dict from classifier module path to ``(B, *W.shape)`` gradients.
    """
    layers = find_classifiers(model)
    weights = [layer.weight for layer in layers]
    saved = [w.requires_grad for w in weights]
    try:
        for w in weights:
            w.requires_grad_(True)
        per_sample = []
        batch_logits = None if one_image_per_forward else model(x)
        for i in range(x.shape[0]):
            logits = model(x[i : i + 1]) if one_image_per_forward else batch_logits[i : i + 1]
            j = introspection_loss(loss, logits, target).sum()
            grads = torch.autograd.grad(j, weights, allow_unused=True, retain_graph=not one_image_per_forward)
            per_sample.append(grads)
    finally:
        for w, flag in zip(weights, saved, strict=False):
            w.requires_grad_(flag)
    return {
        layer.name: torch.stack([g[k] if g[k] is not None else torch.zeros_like(weights[k]) for g in per_sample])
        for k, layer in enumerate(layers)
    }
