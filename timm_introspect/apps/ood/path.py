"""The introspective path x -> f -> r_x -> feature scaling -> H as models of the image, for OOD detectors.

The pass itself is the head's (:meth:`~timm_introspect.IntrospectiveHead.forward_introspection`, over the
one introspective pass of :mod:`timm_introspect.core.introspect`): differentiable w.r.t. the input image
when it requires grad (ODIN's input perturbation on H, adaptive attacks on H), and returning what the
detectors read (f's logits and penultimate features, r_x in factored form, H's hidden activations). This
module only adapts it to the ``nn.Module`` interface detectors take.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import UnsupportedClassifierError
from ...model.head import IntrospectiveHead, IntrospectivePass

__all__ = ["IntrospectiveHidden", "IntrospectiveLogits", "IntrospectivePass", "Penultimate", "introspective_pass"]


def introspective_pass(head: IntrospectiveHead, x: torch.Tensor, hidden: bool = True) -> IntrospectivePass:
    """Run f and H on normalized images ``x`` (as ``head(x)``), differentiably when ``x`` requires grad.

    Args:
        head: a fitted introspective model.
        x: ``(B, C, H, W)`` images, normalized for f.
        hidden: also record H's hidden activations.
    """
    return head.forward_introspection(x, hidden=hidden)


class IntrospectiveLogits(nn.Module):
    """H's logits as a model of the image: ``x -> H(scale(r_x(f, x)))``, differentiable w.r.t. ``x``.

    Use it wherever a detector takes a model, e.g. ``pytorch_ood.detector.ODIN(IntrospectiveLogits(head))``.
    """

    def __init__(self, head: IntrospectiveHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return introspective_pass(self.head, x, hidden=False).logits


class IntrospectiveHidden(nn.Module):
    """H's hidden activations as an encoder of the image (``layer=-1``: the input of H's output layer).

    H's first layer is a learned linear map of the scaled r_x, so ``layer=0`` is a projection of scaled r_x
    (after H's activation): feature-space detectors (Mahalanobis, KNN, ViM) read r_x through it.
    """

    def __init__(self, head: IntrospectiveHead, layer: int = -1) -> None:
        super().__init__()
        self.head = head
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acts = introspective_pass(self.head, x).hidden
        if not acts:
            raise UnsupportedClassifierError(f"H ({type(self.head.introspective_net).__name__}) has no hidden layer "
                                             "read through nn.Linear: feature detectors on H need one")
        return acts[self.layer]


class Penultimate(nn.Module):
    """f's penultimate features ``(B, d)``, by timm's protocol:
    ``forward_head(forward_features(x), pre_logits=True)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
