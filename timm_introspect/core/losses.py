"""Introspection losses J(t, z) and their closed-form derivatives dJ/dz.

Introspection asks f "why not class j?" for every class at once by taking the gradient of a loss
J(c * 1_N, z) with the all-``c`` target (paper, Theorem 1). Each loss here is the PyTorch loss with
reduction ``"sum"`` over one sample's N logits; :func:`introspection_loss` evaluates it with PyTorch's
own functions (the reference that autograd differentiates) and :func:`loss_delta` gives its
derivative in closed form (what the fast path uses). The two are checked against each other in tests.

``c`` is 1 by default; the paper's "-M" variants use ``c = M``, the mean over the training set of the
largest logit (fitted by :meth:`IntrospectiveHead.fit`).

The losses are a registry, as the networks H are (:func:`~timm_introspect.nets.registry.register_net`):
:func:`register_loss` adds one (J and its closed-form dJ/dz), :func:`list_losses` names them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InvalidArgumentError, UnknownLossError

__all__ = ["LOSSES", "introspection_loss", "list_losses", "loss_delta", "parse_loss", "register_loss"]


def _nll_sum(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # PyTorch's nll_loss on class indices, summed over every class k as the "label", each weighted
    # by its target t_k:  sum_k t_k * nll_loss(z, k) = -sum_k t_k z_k.
    num_classes = z.shape[-1]
    labels = torch.arange(num_classes, device=z.device)
    return torch.stack(
        [F.nll_loss(z[b].expand(num_classes, -1), labels, weight=t[b], reduction="sum") for b in range(z.shape[0])]
    )


# name -> (J(z, t) per sample with reduction "sum" over the N logits, dJ/dz in closed form), in registration order
_Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LOSSES: dict[str, tuple[_Fn, _Fn]] = {}
_ALIASES = {"smoothl1": "smooth_l1", "softmargin": "soft_margin", "cross_entropy": "ce"}


def register_loss(name: str, loss: _Fn | None = None, delta: _Fn | None = None) -> Any:
    """Register an introspection loss J under ``name``, with its derivative dJ/dz in closed form.

    ``loss(z, t)`` gives J per sample ``(B,)`` (the PyTorch loss with reduction ``"sum"`` over the N logits; the
    reference that autograd differentiates) and ``delta(z, t)`` its gradient w.r.t. the logits ``z``, same shape
    as ``z`` (what the fast path uses); ``t`` is the target, ``c * 1_N`` expanded to ``z``'s shape. Call it with
    both functions, or use it as a decorator of ``loss``::

        @register_loss("huber2", delta=lambda z, t: torch.clamp(z - t, -2.0, 2.0))
        def huber2(z, t):
            return F.huber_loss(z, t, reduction="none", delta=2.0).sum(-1)

    The loss is then available by name everywhere a loss is taken (``IntrospectiveHead.wrap(model,
    loss="huber2-M")``, :func:`introspection_loss`, :func:`loss_delta`). ``name`` is lower case (letters, digits,
    ``_``) and does not end in ``_m`` (the paper's "-M" suffix selects the target M).

    Returns:
        ``loss`` (function form), or the decorator.
    """
    if delta is None or not callable(delta):
        raise InvalidArgumentError(f"register_loss({name!r}) needs delta, the closed-form dJ/dz of the loss")
    key = name if isinstance(name, str) else ""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", key) or key.endswith("_m") or key in _ALIASES:
        raise InvalidArgumentError(f"a loss name must be lower case (letters, digits, '_'), not end in '_m' (the "
                                   f"target-M suffix) nor be an alias of a built-in loss; got {name!r}")

    def register(fn: _Fn) -> _Fn:
        if not callable(fn):
            raise InvalidArgumentError(f"register_loss({name!r}): loss must be a function (z, t) -> (B,) losses")
        if key in _LOSSES and _LOSSES[key] != (fn, delta):
            raise InvalidArgumentError(f"a loss named {key!r} is already registered")
        _LOSSES[key] = (fn, delta)
        return fn

    return register if loss is None else register(loss)


def list_losses() -> list[str]:
    """Names of the registered introspection losses, in the order registered (the built-in ones first)."""
    return list(_LOSSES)


register_loss(
    "ce",
    lambda z, t: F.cross_entropy(z, t, reduction="none"),
    lambda z, t: t.sum(-1, keepdim=True) * torch.softmax(z, -1) - t,
)
register_loss(
    "mse",
    lambda z, t: F.mse_loss(z, t, reduction="none").sum(-1),
    lambda z, t: 2 * (z - t),
)
register_loss(
    "bce",
    lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(-1),
    lambda z, t: torch.sigmoid(z) - t,
)
register_loss(
    "l1",
    lambda z, t: F.l1_loss(z, t, reduction="none").sum(-1),
    lambda z, t: torch.sign(z - t),
)
register_loss(
    "smooth_l1",
    lambda z, t: F.smooth_l1_loss(z, t, reduction="none", beta=1.0).sum(-1),
    lambda z, t: torch.clamp(z - t, -1.0, 1.0),
)
register_loss(
    "soft_margin",
    lambda z, t: F.soft_margin_loss(z, t, reduction="none").sum(-1),
    lambda z, t: -t * torch.sigmoid(-t * z),
)
register_loss("nll", _nll_sum, lambda z, t: -t)

#: Names of the built-in introspection losses (the paper's Table 7); :func:`list_losses` adds registered ones.
LOSSES: tuple[str, ...] = tuple(_LOSSES)


def parse_loss(name: str) -> tuple[str, str | None]:
    """Split a loss name such as ``"mse"`` or the paper's ``"MSE-M"`` into ``(loss, target)``.

    Returns the canonical lower-case loss name and ``"M"`` for a "-M" suffix, else ``None``.
    Raises :class:`UnknownLossError` listing the registered names (:func:`list_losses`).
    """
    if not isinstance(name, str):
        raise UnknownLossError(f"loss must be a string, one of {tuple(_LOSSES)}; got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    target = None
    if key.endswith("_m"):
        key, target = key[:-2], "M"
    key = _ALIASES.get(key, key)
    if key not in _LOSSES:
        raise UnknownLossError(
            f"unknown introspection loss {name!r}: use one of {', '.join(_LOSSES)} "
            f"(append '-M' for the paper's target M, e.g. 'mse-M')"
        )
    return key, target


def _target(z: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(target, dtype=z.dtype, device=z.device).expand_as(z)


def introspection_loss(loss: str, logits: torch.Tensor, target: float | torch.Tensor = 1.0) -> torch.Tensor:
    """J(target * 1_N, logits) per sample, computed with PyTorch's loss functions.

    Args:
        loss: a name from :func:`list_losses` (:data:`LOSSES` and any registered with :func:`register_loss`).
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

