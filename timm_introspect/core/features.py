"""Per-sample classifier weight gradients from one forward pass (the functional core).

A classifier computes ``y = c(h; W)``. Given ``delta_y = dJ/dy`` for every sample, the introspective
features are the per-sample weight gradients ``dJ/dW``. For the two classifier kinds that cover
almost all of timm the gradient is an outer product and needs no backward pass:

* ``nn.Linear``: ``y = h W^T + b`` over any leading positions ``s`` -> ``dJ/dW = sum_s delta_s h_s^T``
* ``nn.Conv2d`` 1x1: the same, with the spatial positions as ``s`` (and a trailing ``1 x 1``)

Any other layer falls back to :func:`functional_weight_grad` (``torch.func``: vmap over samples of a
vector-Jacobian product), which is exact for any per-sample layer but slower.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vjp, vmap

from .classifier import ClassifierLayer

__all__ = ["Factors", "conv1x1_weight_grad", "functional_weight_grad", "linear_weight_grad", "promote", "weight_grad"]

#: r_x in factored form: classifier name -> ``(delta (B, S, N), h (B, S, d))``, r_x = sum_s delta_s h_s^T
Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


def promote(delta: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both factors in their common dtype, at least float32 (r_x of a float16 / bfloat16 f is float32)."""
    dtype = torch.promote_types(torch.promote_types(delta.dtype, h.dtype), torch.float32)
    return delta.to(dtype), h.to(dtype)


def linear_weight_grad(delta: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Per-sample ``dJ/dW`` of a linear layer ``y = h W^T + b``.

    Args:
        delta: ``(B, ..., N)`` gradient of J w.r.t. the layer output.
        h: ``(B, ..., d)`` the layer input, same leading shape as ``delta``.

    Returns:
        ``(B, N, d)``: ``sum_s delta[b, s, :] outer h[b, s, :]`` for each sample ``b``.
    """
    delta, h = promote(delta, h)
    batch = delta.shape[0]
    if delta.dim() == 2:  # the common case: one position per sample, a plain outer product
        return delta.unsqueeze(2) * h.unsqueeze(1)
    return torch.bmm(delta.reshape(batch, -1, delta.shape[-1]).transpose(1, 2), h.reshape(batch, -1, h.shape[-1]))


def conv1x1_weight_grad(delta: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Per-sample ``dJ/dW`` of a 1x1, stride-1, ungrouped ``Conv2d``.

    Args:
        delta: ``(B, N, H, W)`` gradient of J w.r.t. the conv output.
        h: ``(B, C, H, W)`` the conv input.

    Returns:
        ``(B, N, C, 1, 1)``, the shape of the conv weight with a batch dimension in front.
    """
    delta, h = promote(delta, h)
    grad = torch.bmm(delta.flatten(2), h.flatten(2).transpose(1, 2))
    return grad[..., None, None]


def functional_weight_grad(
    module: nn.Module, h: torch.Tensor, delta: torch.Tensor, param_name: str = "weight"
) -> torch.Tensor:
    """Per-sample gradient of ``<delta, module(h)>`` w.r.t. one parameter, via ``torch.func``.

    Exact for any module that treats samples independently (true of classifiers in eval mode).

    Args:
        module: the classifier layer.
        h: ``(B, ...)`` its input.
        delta: ``(B, ...)`` gradient of J w.r.t. its output.
        param_name: the parameter to differentiate.

    Returns:
        ``(B, *param.shape)``.
    """
    params = {name: p.detach() for name, p in module.named_parameters()}
    buffers = dict(module.named_buffers())

    def sample_grad(h_i: torch.Tensor, delta_i: torch.Tensor) -> torch.Tensor:
        def output(weight: torch.Tensor) -> torch.Tensor:
            out = functional_call(module, ({**params, param_name: weight}, buffers), (h_i.unsqueeze(0),))
            return out.squeeze(0)

        _, pullback = vjp(output, params[param_name])
        return pullback(delta_i.to(params[param_name].dtype))[0]

    return vmap(sample_grad)(h, delta)


def weight_grad(layer: ClassifierLayer, h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Per-sample ``dJ/dW`` of a classifier layer, by its kind: closed form, or ``torch.func``."""
    if layer.kind == "linear":
        return linear_weight_grad(delta, h)
    if layer.kind == "conv1x1":
        return conv1x1_weight_grad(delta, h)
    return functional_weight_grad(layer.module, h, delta)
