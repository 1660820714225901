"""Contrastive explanations in pytorch-grad-cam (``pip install grad-cam``), which has no contrastive target.

    from pytorch_grad_cam import GradCAM
    cam = GradCAM(model, [model.blocks[-1].norm1], reshape_transform=token_reshape(model, (224, 224)))
    maps = cam(images, targets=[ContrastiveTarget(q) for q in contrast_classes])  # "why P, rather than Q?"

Nothing here imports pytorch-grad-cam: a target is a callable on one image's logits, a reshape transform a
callable on a layer's output. :class:`~timm_introspect.apps.explain.Explainer` needs neither (and computes all Q
at once); these are for users of that library.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layout import resolve_layout, spatial

__all__ = ["ContrastiveTarget", "token_reshape"]


class ContrastiveTarget:
    """The target J = CE(z, Q) of the contrastive map: back-propagating it answers "why P, rather than Q?".

    Args:
        contrast: the class index Q.
    """

    def __init__(self, contrast: int) -> None:
        self.contrast = int(contrast)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        logits = model_output if model_output.dim() == 2 else model_output[None]
        target = torch.full((logits.shape[0],), self.contrast, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target, reduction="sum")

    def __repr__(self) -> str:
        return f"ContrastiveTarget({self.contrast})"


def token_reshape(model: nn.Module, input_size: tuple[int, int],
                  layer: str = "the target layer") -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``reshape_transform``: a layer's output (tokens, NHWC or NCHW) as ``(B, C, h, w)``, the patch grid and
    prefix tokens read from timm's attributes (``patch_embed.grid_size``, ``num_prefix_tokens``)."""

    def reshape(tensor: torch.Tensor) -> torch.Tensor:
        return spatial(tensor, resolve_layout(model, tensor, tuple(input_size), layer))

    return reshape
