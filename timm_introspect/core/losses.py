"""Introspection losses J(t, z) and their closed-form derivatives dJ/dz.

Introspection asks f "why not class j?" for every class at once by taking the gradient of a loss
J(c * 1_N, z) with the all-``c`` target (paper, Theorem 1). Each loss here is the PyTorch loss with
reduction ``"sum"`` over one sample's N logits; :func:`introspection_loss` evaluates it with PyTorch's
own functions (the reference that autograd differentiates) and :func:`loss_delta` gives its
derivative in closed form (what the fast path uses). The two are checked against each other in tests.

``c`` is 1 by default; the paper's "-M" variants use ``c = M``, the mean over the training set of the
largest logit (fitted by :meth:`IntrospectiveHead.fit`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import UnknownLossError

__all__ = ["LOSSES", "introspection_loss", "loss_delta", "parse_loss"]


def _nll_sum(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # PyTorch's nll_loss on class indices, summed over every class k as the "label", each weighted
    # by its target t_k:  sum_k t_k * nll_loss(z, k) = -sum_k t_k z_k.
    num_classes = z.shape[-1]
    labels = torch.arange(num_classes, device=z.device)
    return torch.stack(
        [F.nll_loss(z[b].expand(num_classes, -1), labels, weight=t[b], reduction="sum") for b in range(z.shape[0])]
    )


# name -> (J(z, t) per sample with reduction "sum" over the N logits, dJ/dz in closed form)
_Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LOSSES: dict[str, tuple[_Fn, _Fn]] = {
    "ce": (
        lambda z, t: F.cross_entropy(z, t, reduction="none"),
        lambda z, t: t.sum(-1, keepdim=True) * torch.softmax(z, -1) - t,
    ),
    "mse": (
        lambda z, t: F.mse_loss(z, t, reduction="none").sum(-1),
        lambda z, t: 2 * (z - t),
    ),
    "bce": (
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(-1),
        lambda z, t: torch.sigmoid(z) - t,
    ),
    "l1": (
        lambda z, t: F.l1_loss(z, t, reduction="none").sum(-1),
        lambda z, t: torch.sign(z - t),
    ),
    "smooth_l1": (
        lambda z, t: F.smooth_l1_loss(z, t, reduction="none", beta=1.0).sum(-1),
        lambda z, t: torch.clamp(z - t, -1.0, 1.0),
    ),
    "soft_margin": (
        lambda z, t: F.soft_margin_loss(z, t, reduction="none").sum(-1),
        lambda z, t: -t * torch.sigmoid(-t * z),
    ),
    "nll": (
        _nll_sum,
        lambda z, t: -t,
    ),
}

#: Names of the supported introspection losses (the paper's Table 7).
LOSSES: tuple[str, ...] = tuple(_LOSSES)


def parse_loss(name: str) -> tuple[str, str | None]:
    """Split a loss name such as ``"mse"`` or the paper's ``"MSE-M"`` into ``(loss, target)``.

    Returns the canonical lower-case loss name and ``"M"`` for a "-M" suffix, else ``None``.
    Raises :class:`UnknownLossError` listing the valid names.
    """
    if not isinstance(name, str):
        raise UnknownLossError(f"loss must be a string, one of {LOSSES}; got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    target = None
    if key.endswith("_m"):
        key, target = key[:-2], "M"
    key = {"smoothl1": "smooth_l1", "softmargin": "soft_margin", "cross_entropy": "ce"}.get(key, key)
    if key not in _LOSSES:
        raise UnknownLossError(
            f"unknown introspection loss {name!r}: use one of {', '.join(LOSSES)} "
            f"(append '-M' for the paper's target M, e.g. 'mse-M')"
        )
    return key, target


def _target(z: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(target, dtype=z.dtype, device=z.device).expand_as(z)


def introspection_loss(loss: str, logits: torch.Tensor, target: float | torch.Tensor = 1.0) -> torch.Tensor:
    """J(target * 1_N, logits) per sample, computed with PyTorch's loss functions.

    Args:
        loss: one of :data:`LOSSES`.
        logits: ``(B, N)`` logits of f.
        target: the constant ``c`` of the target vector ``c * 1_N``.

    Returns:
        ``(B,)`` losses, each summed over the sample's N logits.
    """
    key, _ = parse_loss(loss)
    return _LOSSES[key][0](logits, _target(logits, target))


def loss_delta(loss: str, logits: torch.Tensor, target: float | torch.Tensor = 1.0) -> torch.Tensor:
    """dJ/dz in closed form: the derivative of :func:`introspection_loss` w.r.t. ``logits``.

    Works on any shape ``(..., N)``; every sample (row) is independent, so one call covers a batch.
    """
    key, _ = parse_loss(loss)
    return _LOSSES[key][1](logits, _target(logits, target))

