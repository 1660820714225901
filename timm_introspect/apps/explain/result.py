"""The result of an explanation: maps at the layer's resolution, what they explain, and how they were made."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import InvalidArgumentError
from .layout import FeatureLayout

__all__ = ["Explanation", "Plan", "normalize_maps", "upsample_maps"]


@dataclass(frozen=True)
class Plan:
    """How a model is explained.

    Attributes:
        method: ``"closed-form"`` (weights from the forward pass) or ``"autograd"`` (backward passes).
        layer: ``"forward_features"`` (the final feature map) or the module path of the target layer.
        layout: where the map's positions are.
        tail: for the closed form, ``"linear"`` (pooling + one linear layer: W) or ``"head-jacobian"`` (pooling,
            then a position-free head whose Jacobian is taken on the pooled vector).
        grid: map size the head is run on for the head Jacobian.
        reason: why this method and layer.
        classifier: for the linear tail, the module path of the classifier whose weight is W.
    """

    method: str
    layer: str
    layout: FeatureLayout
    tail: str | None = None
    grid: tuple[int, int] | None = None
    reason: str = ""
    classifier: str | None = None


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., h, w)`` maps resized to ``size`` (bilinear, as Grad-CAM does)."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False).reshape(*lead, *size)


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each ``(h, w)`` map scaled to [0, 1] (min-max; a constant map becomes all zeros)."""
    flat = maps.flatten(-2)
    low = flat.min(dim=-1, keepdim=True).values
    span = flat.max(dim=-1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


@dataclass
class Explanation:
    """Grad-CAM ("why P?") and contrastive maps ("why P, rather than Q?") for a batch.

    Attributes:
        logits: f's logits ``(B, N)``.
        prediction: P, the predicted class per image ``(B,)``.
        contrast: Q, the contrast classes ``(B, K)``.
        grad_cam: ReLU'd Grad-CAM of the logit z_P at the layer's resolution ``(B, h, w)``.
        contrastive: ReLU'd Grad-CAM of CE(z, Q) ``(B, K, h, w)``.
        plan: how the maps were made.
        label_names: class names (``None``: classes are shown by index).
        input_size: ``(H, W)`` of the images.
    """

    logits: torch.Tensor
    prediction: torch.Tensor
    contrast: torch.Tensor
    grad_cam: torch.Tensor
    contrastive: torch.Tensor
    plan: Plan
    label_names: list[str] | None
    input_size: tuple[int, int]

    @property
    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=1)

    def maps(self, which: str = "contrastive", size: tuple[int, int] | None = None,
             normalize: bool = True) -> torch.Tensor:
        """``"contrastive"`` ``(B, K, H, W)`` or ``"grad_cam"`` ``(B, H, W)`` maps at the image size (or ``size``),
        each scaled to [0, 1]."""
        if which not in ("contrastive", "grad_cam"):
            raise InvalidArgumentError(f"which must be 'contrastive' or 'grad_cam', got {which!r}")
        maps = upsample_maps(getattr(self, which), size or self.input_size)
        return normalize_maps(maps) if normalize else maps

    def class_name(self, index: int) -> str:
        index = int(index)
        return self.label_names[index] if self.label_names else f"class {index}"

    def titles(self, image: int) -> list[str]:
        """``["why P?", "why P, rather than Q?", ...]`` for one image."""
        p = self.class_name(self.prediction[image])
        return [f"why {p}?"] + [f"why {p}, rather than {self.class_name(q)}?" for q in self.contrast[image].tolist()]
