"""The functional core: per-sample weight gradients equal autograd on the bare layers."""

import torch
from helpers import rel_err
from torch import nn

from timm_introspect import conv1x1_weight_grad, functional_weight_grad, linear_weight_grad


def per_sample_autograd(layer: nn.Module, h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    grads = []
    for i in range(h.shape[0]):
        out = layer(h[i : i + 1])
        (g,) = torch.autograd.grad((out * delta[i : i + 1]).sum(), layer.weight)
        grads.append(g)
    return torch.stack(grads)


def test_linear_outer_product():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    h, delta = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    ours = linear_weight_grad(delta, h)
    assert ours.shape == (3, 4, 6)
    assert rel_err(ours, per_sample_autograd(layer, h, delta)) < 1e-12


def test_linear_over_tokens_sums_positions():
    torch.manual_seed(1)
    layer = nn.Linear(6, 4).double()
    h, delta = torch.randn(3, 5, 6, dtype=torch.float64), torch.randn(3, 5, 4, dtype=torch.float64)
    assert rel_err(linear_weight_grad(delta, h), per_sample_autograd(layer, h, delta)) < 1e-12


def test_conv1x1_spatial_sum():
    torch.manual_seed(2)
    layer = nn.Conv2d(6, 4, 1).double()
    h, delta = torch.randn(3, 6, 5, 5, dtype=torch.float64), torch.randn(3, 4, 5, 5, dtype=torch.float64)
    ours = conv1x1_weight_grad(delta, h)
    assert ours.shape == (3, 4, 6, 1, 1)
    assert rel_err(ours, per_sample_autograd(layer, h, delta)) < 1e-12


def test_functional_fallback_on_any_layer():
    torch.manual_seed(3)
    layer = nn.Linear(6, 4).double()
    conv3x3 = nn.Conv2d(6, 4, 3, padding=1).double()  # not 1x1: only the fallback applies
    h, delta = torch.randn(3, 6, 5, 5, dtype=torch.float64), torch.randn(3, 4, 5, 5, dtype=torch.float64)
    ours = functional_weight_grad(conv3x3, h, delta)
    assert ours.shape == (3, *conv3x3.weight.shape)
    assert rel_err(ours, per_sample_autograd(conv3x3, h, delta)) < 1e-12
    h2, d2 = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    assert rel_err(functional_weight_grad(layer, h2, d2), linear_weight_grad(d2, h2)) < 1e-12
