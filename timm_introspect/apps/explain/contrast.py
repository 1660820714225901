"""Which classes to contrast with: "why P, rather than Q?" for one Q, a list, every class, or the runner-up.

P is always f's prediction (the largest logit). Q is given as a class index, a class name (the model's
``pretrained_cfg["label_names"]`` or names passed in), a list of either, ``"all"`` (every class, in
order), ``"runner-up"`` / ``None`` (the second-largest logit of each image, the paper's default), or a
tensor of indices per image ``(B,)`` / ``(B, K)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Union

import torch
from torch import nn

from ...errors import InvalidArgumentError

__all__ = ["Contrast", "class_index", "class_names", "resolve_contrast"]

#: What ``contrast=`` accepts.
Contrast = Union[None, str, int, Sequence[Union[int, str]], torch.Tensor]  # noqa: UP007 (a runtime alias)


def class_names(model: nn.Module, label_names: Sequence[str] | None = None) -> list[str] | None:
    """``label_names`` if given, else the model's ``pretrained_cfg["label_names"]`` (``None`` when it has none)."""
    names = label_names
    if names is None:
        names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    return [str(n) for n in names] if names is not None else None


def class_index(item: int | str, num_classes: int, names: Sequence[str] | None) -> int:
    """One class as an index in ``[0, num_classes)``.

    Raises:
        InvalidArgumentError: an index out of range, a name the model does not know, or a name for a model
            without class names.
    """
    if isinstance(item, bool):
        raise InvalidArgumentError(f"contrast class {item!r}: pass a class index or name, not a bool")
    if isinstance(item, int) or (isinstance(item, torch.Tensor) and item.dim() == 0):
        index = int(item)
        if not 0 <= index < num_classes:
            raise InvalidArgumentError(f"contrast class {index} is out of range: the model has {num_classes} classes, "
                                       f"0 to {num_classes - 1}")
        return index
    if isinstance(item, str):
        if item.isdigit() and (names is None or item not in names):
            return class_index(int(item), num_classes, names)
        if names is None:
            raise InvalidArgumentError(f"contrast class {item!r}: the model has no class names (no "
                                       "pretrained_cfg['label_names']); pass label_names=... or class indices")
        if item in names:
            return list(names).index(item)
        close = difflib.get_close_matches(item, names, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise InvalidArgumentError(f"unknown class name {item!r}{hint} The model's classes are: {shown}")
    raise InvalidArgumentError(f"contrast class {item!r} ({type(item).__name__}): pass an int index or a class name")


def resolve_contrast(contrast: Contrast, logits: torch.Tensor, names: Sequence[str] | None = None) -> torch.Tensor:
    """The contrast classes Q per image, ``(B, K)`` int64, for logits ``(B, N)``."""
    batch, num_classes = logits.shape
    if contrast is None or (isinstance(contrast, str) and contrast in ("runner-up", "runner_up", "second")):
        if num_classes < 2:
            raise InvalidArgumentError("a model with one class has no runner-up class to contrast with")
        return logits.topk(2, dim=1).indices[:, 1:]
    if isinstance(contrast, str) and contrast == "all":
        return torch.arange(num_classes, device=logits.device).expand(batch, num_classes)
    if isinstance(contrast, torch.Tensor):
        if contrast.is_floating_point() or contrast.dtype == torch.bool:
            raise InvalidArgumentError(f"contrast tensor has dtype {contrast.dtype}: pass class indices (int64)")
        q = contrast.to(device=logits.device, dtype=torch.long)
        q = q[:, None] if q.dim() == 1 else q
        if q.dim() != 2 or q.shape[0] != batch:
            raise InvalidArgumentError(f"contrast tensor of shape {tuple(contrast.shape)}: pass (B,) or (B, K) class "
                                       f"indices for the batch of {batch} images")
        bad = q[(q < 0) | (q >= num_classes)]
        if bad.numel():
            raise InvalidArgumentError(f"contrast class {bad[0].item()} is out of range: the model has {num_classes} "
                                       f"classes, 0 to {num_classes - 1}")
        return q
    items = [contrast] if isinstance(contrast, (int, str)) else list(contrast)
    if not items:
        raise InvalidArgumentError("contrast is an empty list: pass at least one class, 'all' or None (runner-up)")
    indices = [class_index(item, num_classes, names) for item in items]
    return torch.tensor(indices, device=logits.device).expand(batch, len(indices))
