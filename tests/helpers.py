"""Helpers the tests share (imported as ``from helpers import ...``; fixtures live in conftest.py)."""

from __future__ import annotations

import functools

import timm
import torch
from torch import nn

from timm_introspect import find_classifiers

__all__ = ["rel_err", "timm_model"]


@functools.cache
def timm_model(name: str, dtype: torch.dtype = torch.float64, **kwargs) -> torch.nn.Module:
    """A timm model with random weights and 10 classes, seeded, in eval mode (cached per worker)."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **kwargs).to(dtype).eval()
    # timm zero-initializes some heads (e.g. MLP-Mixer): give every classifier random weights so that
    # logits, and hence introspective features, are not degenerate.
    for layer in find_classifiers(model):
        nn.init.normal_(layer.weight, std=layer.weight[0].numel() ** -0.5)
        if getattr(layer.module, "bias", None) is not None:
            nn.init.normal_(layer.module.bias, std=0.1)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b|| (Frobenius)."""
    return ((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny)).item()
