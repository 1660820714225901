"""What an :class:`~timm_introspect.IntrospectiveHead` returns: its forward's output, and a full pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.features import Factors

__all__ = ["IntrospectiveOutput", "IntrospectivePass"]


@dataclass
class IntrospectiveOutput:
    """What :class:`IntrospectiveHead` returns.

    Attributes:
        logits: ``(B, N)`` H's prediction from the introspective features.
        base_logits: ``(B, N)`` f's logits, bit-identical to calling the wrapped model.
        features: ``(B, F)`` the scaled, flattened introspective features H saw (``None`` for an H
            that reads them in factored form and never materializes them).
    """

    logits: torch.Tensor
    base_logits: torch.Tensor
    features: torch.Tensor | None = None


@dataclass
class IntrospectivePass:
    """Everything one pass of x -> f -> r_x -> scaling -> H gives (:meth:`IntrospectiveHead.forward_introspection`).

    Attributes:
        base_logits: ``(B, N)`` f's logits.
        logits: ``(B, N)`` H's logits.
        factors: raw (unscaled) r_x per linear / 1x1-conv classifier layer: ``(delta (B, S, N), h (B, S, d))``,
            ``r_x = sum_s delta_s h_s^T`` (other classifier kinds are left out).
        penultimate: ``(B, d)`` f's penultimate features (the input of its classifier) for a model with one
            pooled linear classifier, else ``None``.
        features: what H read: the scaled flat r_x ``(B, F)``, or the scaled factors for an H on factors.
        hidden: H's hidden activations, first to last (the inputs of its ``nn.Linear`` layers after the
            first; only when asked for); ``hidden[-1]`` feeds H's output layer.
        head_output_is_linear: whether H's logits are the output of an ``nn.Linear`` fed by ``hidden[-1]``.
    """

    base_logits: torch.Tensor
    logits: torch.Tensor
    factors: Factors
    penultimate: torch.Tensor | None
    features: Any = None
    hidden: list[torch.Tensor] = field(default_factory=list)
    head_output_is_linear: bool = False
