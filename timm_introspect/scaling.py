"""Scaling introspective features to [-1, 1].

The paper scales r_x "between [-1, 1]" before H. Here every feature dimension is divided by its
largest absolute value over the training set and clamped, so unseen (e.g. corrupted) inputs stay in
range. The scale is a buffer: it is saved and loaded with the model.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import NotFittedError

__all__ = ["FeatureScaler", "scale_features"]


def scale_features(features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``clamp(features / scale, -1, 1)``; dimensions with scale 0 (never active in training) pass as is."""
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (features / safe).clamp(-1.0, 1.0)


class FeatureScaler(nn.Module):
    """Per-dimension max-abs scaling of flat features ``(B, F)``, fitted with :meth:`update`.

    Use :meth:`reset`, then :meth:`update` on every training batch; the scaler counts as fitted after
    the first update.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.zeros(num_features))
        self.register_buffer("fitted", torch.tensor(False))
        self._fitted_cache = False

    def reset(self) -> None:
        self.scale.zero_()
        self.fitted.fill_(False)
        self._fitted_cache = False

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Fold a batch of training features ``(B, F)`` into the running max-abs."""
        torch.maximum(self.scale, features.detach().abs().amax(0).to(self.scale), out=self.scale)
        self.fitted.fill_(True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self._fitted_cache:  # one host sync until fitted, none afterwards
            self._fitted_cache = bool(self.fitted)
            if not self._fitted_cache:
                raise NotFittedError(
                    "the [-1, 1] feature scale is not fitted: call head.fit(train_loader) on the training "
                    "data first (or load a saved model)"
                )
        return scale_features(features, self.scale)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._fitted_cache = False
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"num_features={self.scale.numel()}"
