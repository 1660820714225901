"""Where the spatial positions of a timm feature map are: ``NCHW``, ``NHWC`` or tokens on a patch grid.

A CNN's feature map is ``(B, C, H, W)``; Swin-style models give ``(B, H, W, C)`` (``model.output_fmt``);
ViT-style models give tokens ``(B, L, C)``: ``num_prefix_tokens`` class / distillation / register tokens
(for models without that attribute: their ``cls_token`` / ``dist_token`` / ``cls_token<i>`` parameters),
then the patch tokens in row-major order. The patch grid is read from timm's own attributes, never
guessed from the token count: the patch embedding's ``grid_size`` (``dynamic_feat_size`` for the actual
input size), else the ``reduction`` of the model's ``feature_info`` entries.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import NoSpatialMapError

__all__ = ["FeatureLayout", "broadcast_mean", "patch_mean", "resolve_layout", "spatial"]


@dataclass(frozen=True)
class FeatureLayout:
    """How to read a feature tensor as a spatial map.

    Attributes:
        fmt: ``"NCHW"``, ``"NHWC"`` or ``"NLC"`` (tokens).
        grid: ``(h, w)`` of the map (for tokens: the patch grid).
        channels: C.
        prefix: number of tokens before the patch tokens (``"NLC"`` only).
    """

    fmt: str
    grid: tuple[int, int]
    channels: int
    prefix: int = 0

    @property
    def positions(self) -> int:
        return self.grid[0] * self.grid[1]


def _arch(model: nn.Module) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__


def _patch_grids(model: nn.Module, input_hw: tuple[int, int]) -> Iterator[tuple[tuple[int, int], str]]:
    """Patch grids timm's attributes give for this input size, with where each comes from."""
    for name in ("patch_embed", "stem"):
        embed = getattr(model, name, None)
        if embed is None:
            continue
        if callable(getattr(embed, "dynamic_feat_size", None)) and getattr(embed, "patch_size", None) is not None:
            try:
                yield tuple(int(v) for v in embed.dynamic_feat_size(input_hw)), f"{name}.dynamic_feat_size"
            except (TypeError, ValueError):
                pass
        if getattr(embed, "grid_size", None) is not None:
            yield tuple(int(v) for v in embed.grid_size), f"{name}.grid_size"
    infos = getattr(model, "feature_info", None)
    if isinstance(infos, (list, tuple)):
        for info in reversed(infos):
            reduction = info.get("reduction") if isinstance(info, dict) else None
            if reduction:
                for rnd in (math.ceil, math.floor):
                    grid = (rnd(input_hw[0] / reduction), rnd(input_hw[1] / reduction))
                    yield grid, f"feature_info reduction {reduction}"


def _token_parameters(model: nn.Module) -> int:
    """Tokens a model without ``num_prefix_tokens`` puts before its patches (PiT: ``cls_token``, ``dist_token``)."""
    count = 0
    for name in ("cls_token", "dist_token", "reg_token"):
        token = getattr(model, name, None)
        if isinstance(token, torch.Tensor) and token.dim() == 3:
            count += token.shape[1]
    if not count and any(name.startswith("cls_token") for name, _ in model.named_parameters(recurse=False)):
        count = 1  # one class token per stage (CoaT: cls_token1 ... cls_token4)
    return count


def resolve_layout(model: nn.Module, features: torch.Tensor, input_hw: tuple[int, int], where: str = "forward_features",
                   fmt: str | None = None) -> FeatureLayout:
    """The layout of ``features`` (the output of ``where`` for input of size ``input_hw``).

    Raises:
        NoSpatialMapError: pooled features, a 1x1 map, or tokens that do not fill timm's patch grid.
    """
    arch = _arch(model)
    if not isinstance(features, torch.Tensor):
        count = f" of {len(features)}" if isinstance(features, (list, tuple)) else ""
        raise NoSpatialMapError(f"{arch}: {where} gives a {type(features).__name__}{count} tensors, not one feature "
                                "map; name the layer to explain as target_layer")
    todo = ("name a layer with a spatial map as target_layer (e.g. a CNN's last stage, or a ViT's "
            "'blocks.<last>.norm1')")
    if features.dim() == 4:
        fmt = fmt or getattr(model, "output_fmt", "NCHW")
        if fmt not in ("NCHW", "NHWC"):
            fmt = "NCHW"
        grid = tuple(features.shape[2:]) if fmt == "NCHW" else tuple(features.shape[1:3])
        channels = features.shape[1] if fmt == "NCHW" else features.shape[3]
        if grid == (1, 1):
            raise NoSpatialMapError(f"{arch}: {where} gives a 1x1 map {tuple(features.shape)}: nothing spatial to "
                                    f"show; {todo}")
        return FeatureLayout(fmt, grid, int(channels))
    if features.dim() == 3:
        tokens = features.shape[1]
        prefixes = dict.fromkeys((int(getattr(model, "num_prefix_tokens", 0) or 0), _token_parameters(model), 0))
        seen: dict[tuple[int, int], str] = {}
        for grid, source in _patch_grids(model, input_hw):
            seen.setdefault(grid, f"{grid} ({source})")
            for prefix in prefixes:
                if grid[0] * grid[1] == tokens - prefix and grid[0] * grid[1] > 1:
                    return FeatureLayout("NLC", grid, int(features.shape[2]), prefix)
        found = "; timm's attributes give the grid(s) " + ", ".join(seen.values()) if seen else (
            "; the model has no patch_embed.grid_size and no feature_info reductions")
        raise NoSpatialMapError(
            f"{arch}: {where} gives {tokens} tokens {tuple(features.shape)} that do not fill a patch grid "
            f"(num_prefix_tokens={getattr(model, 'num_prefix_tokens', 0)}){found}; {todo}")
    raise NoSpatialMapError(f"{arch}: {where} gives a {features.dim()}-d tensor {tuple(features.shape)}, not a spatial "
                            f"map (pooled features); {todo}")


def spatial(features: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """The map as ``(B, C, h, w)`` (the patch tokens only, for tokens)."""
    if layout.fmt == "NCHW":
        return features
    if layout.fmt == "NHWC":
        return features.permute(0, 3, 1, 2)
    patches = features[:, layout.prefix:]
    return patches.reshape(features.shape[0], *layout.grid, features.shape[2]).permute(0, 3, 1, 2)


def patch_mean(features: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """The mean over the spatial (patch) positions, ``(B, C)``."""
    return spatial(features, layout).mean(dim=(2, 3))


def broadcast_mean(mean: torch.Tensor, like: torch.Tensor, layout: FeatureLayout,
                   grid: tuple[int, int]) -> torch.Tensor:
    """A feature tensor in ``layout`` with every patch position equal to ``mean`` ``(B, C)``, on a ``grid``
    (prefix tokens taken from ``like``)."""
    batch, channels = mean.shape
    h, w = grid
    if layout.fmt == "NCHW":
        return mean[:, :, None, None].expand(batch, channels, h, w)
    if layout.fmt == "NHWC":
        return mean[:, None, None, :].expand(batch, h, w, channels)
    patches = mean[:, None, :].expand(batch, h * w, channels)
    return torch.cat([like[:, : layout.prefix].detach(), patches], dim=1)
