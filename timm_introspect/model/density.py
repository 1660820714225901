"""f's density evidence at several layers, for density-aware calibration (DAC) and density-fed variants of H.

:class:`LayerFeatures` hooks a timm classifier's stages (its ``feature_info``: the output of each stage,
global-average pooled) and keeps its logits, so that one forward pass of f gives every layer's features. :class:
`DensityScorer` keeps those features for f's training images (the bank) and scores any image by its squared
distance to the k-th nearest bank image per layer (:func:`~timm_introspect.core.calibration.knn_distances`).

>>> layers = LayerFeatures(model)                      # doctest: +SKIP
>>> with layers.capture() as got:                      # doctest: +SKIP
...     logits = model(x)                              # any forward of f, e.g. the introspective head's
>>> feats = got.features(logits)                       # doctest: +SKIP  (one (B, C_l) tensor per layer + logits)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..core.calibration import knn_distances
from ..errors import InvalidArgumentError, NotFittedError

__all__ = ["DensityScorer", "LayerFeatures", "pool_features"]


def pool_features(x: torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """A stage output as one vector per image: the mean over space (NCHW or NHWC maps) or tokens (B, N, C)."""
    if x.ndim == 2:
        return x
    if x.ndim == 3:  # tokens (B, N, C)
        return x.mean(1)
    if x.ndim == 4:
        if channels is not None and x.shape[-1] == channels and x.shape[1] != channels:
            return x.mean((1, 2))  # NHWC (e.g. Swin)
        return x.mean((2, 3))
    raise InvalidArgumentError(f"cannot pool a stage output of shape {tuple(x.shape)}")


class _Captured:
    def __init__(self) -> None:
        self.parts: dict[str, list[torch.Tensor]] = {}

    def features(self, logits: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every layer's pooled features, in the model's order, of everything run since capture began (+ logits)."""
        out = [torch.cat(v) for v in self.parts.values()]
        return out + ([logits.detach().float()] if logits is not None else [])


class LayerFeatures:
    """Pooled outputs of a timm classifier's stages (``model.feature_info``), captured during its forward passes.

    Args:
        model: a timm classifier.
        layers: module names (default: every stage timm lists in ``feature_info``).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None) -> None:
        info = getattr(model, "feature_info", None)
        listed = {d["module"]: d.get("num_chs") for d in info} if info else {}
        names = list(layers) if layers is not None else list(listed)
        if not names:
            raise InvalidArgumentError(
                f"{type(model).__name__} lists no stages in `feature_info`: name its layers (layers=[...])")
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise InvalidArgumentError(f"{type(model).__name__} has no module(s) {missing}")
        self.model = model
        self.layers = names
        self._channels = {n: listed.get(n) for n in names}

    @contextmanager
    def capture(self) -> Iterator[_Captured]:
        """Hooks on the stages while the block runs; ``.features(logits)`` gives what was captured."""
        got = _Captured()
        modules = dict(self.model.named_modules())

        def hook(name: str):
            def fn(module: nn.Module, args: object, output: torch.Tensor) -> None:
                out = output[0] if isinstance(output, (tuple, list)) else output
                got.parts.setdefault(name, []).append(pool_features(out.detach(), self._channels[name]).float())
            return fn

        handles = [modules[n].register_forward_hook(hook(n)) for n in self.layers]
        try:
            yield got
        finally:
            for h in handles:
                h.remove()


class DensityScorer:
    """k-NN distances of an image's features to f's training images' features, one per layer (DAC's ``s_l(x)``).

    Args:
        k: the neighbour whose distance is the score (DAC's CIFAR-10 setting: 50).
    """

    def __init__(self, k: int = 50) -> None:
        self.k = k
        self.bank: list[torch.Tensor] | None = None

    def fit(self, features: Sequence[torch.Tensor]) -> DensityScorer:
        """Keep the training images' features, one ``(n, C_l)`` tensor per layer."""
        if not features or any(f.ndim != 2 or len(f) != len(features[0]) for f in features):
            raise InvalidArgumentError("need one (n, C) feature tensor per layer, all for the same n images")
        if len(features[0]) < self.k:
            raise InvalidArgumentError(f"the bank has {len(features[0])} images, fewer than k={self.k}")
        self.bank = [f.float().contiguous() for f in features]
        return self

    def __call__(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Scores ``(n, layers)`` for the images whose per-layer features are given."""
        if self.bank is None:
            raise NotFittedError("DensityScorer.fit(training features) first")
        if len(features) != len(self.bank):
            raise InvalidArgumentError(f"need {len(self.bank)} layers of features, got {len(features)}")
        return torch.stack([knn_distances(b, f, self.k) for b, f in zip(self.bank, features, strict=True)], 1)
