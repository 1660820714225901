"""Introspective networks H that never materialize r_x.

r_x = sum_s delta_s h_s^T has rank one per position (N x d numbers from N + d), but the paper's H
starts with a dense layer over all N * d of them: 2 M inputs for a ResNet-50 on ImageNet-1k. Two
heads read the factors ``(delta, h)`` from :meth:`IntrospectiveHead.introspective_factors` instead:

* :class:`RankOneMLP`: the paper's MLP, same weights, first layer computed as
  ``W1 vec(delta h^T) = sum_n delta_n (W1[:, n, :] h)``: the same result without the ``(B, N*d)``
  input (cost O(k N d) per image, memory O(k min(N, d)));
* :class:`FactorizedMLP`: a first layer whose rows are rank one, ``(A delta) * (B h)``: cost
  O(k (N + d)). It equals an :class:`IntrospectiveMLP` whose first-layer rows are ``A[j] (x) B[j]``
  (:meth:`FactorizedMLP.to_materialized`).

Both take ``{layer name: (delta (B, S, N), h (B, S, d))}`` and set ``takes_factors = True``, which makes
:class:`IntrospectiveHead` feed them factors (scaled by a :class:`FactorScaler`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.features import Factors
from .mlp import IntrospectiveMLP, mlp_layers, resolve_act
from .registry import register_net

__all__ = ["FactorizedMLP", "RankOneMLP"]



class _FactoredMLP(nn.Module):
    """What both heads share: they read factors, keep their sizes, and end in the dense layers ``rest``.

    Subclasses build ``first_layer(factors) -> (B, k)`` and ``rest``.
    """

    takes_factors = True

    def __init__(self, shapes: Sequence[Sequence[int]], num_classes: int, hidden: Sequence[int],
                 act_layer: type[nn.Module] | str) -> None:
        super().__init__()
        self.shapes = [(int(n), int(d)) for n, d in shapes]
        self.num_classes = num_classes
        self.hidden = tuple(hidden)
        self.act_layer = resolve_act(act_layer)

    @classmethod
    def from_shapes(cls, shapes: Sequence[Sequence[int]], num_classes: int, **kwargs: Any) -> _FactoredMLP:
        """Sized for classifier weights of ``shapes`` (``(N, d)`` or a 1x1 conv's ``(N, d, 1, 1)``)."""
        return cls([tuple(s[:2]) for s in shapes], num_classes, **kwargs)

    def first_layer(self, factors: Factors) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{type(self).__name__} ({args}), reading r_x in factored form"

    def forward(self, factors: Factors) -> torch.Tensor:
        return self.rest(self.first_layer(factors))

    def config(self) -> dict[str, Any]:
        return {"shapes": [list(s) for s in self.shapes], "num_classes": self.num_classes, "hidden": list(self.hidden),
                "act_layer": self.act_layer.__name__}


@register_net("rankone")
class RankOneMLP(_FactoredMLP):
    """The paper's MLP H on factored r_x: equal to :class:`IntrospectiveMLP` with the same weights.

    Args:
        shapes: ``(N, d)`` of each classifier layer, in the head's order.
        num_classes: output classes.
        hidden: hidden widths (the first is the k of the first layer).
        act_layer: activation between layers.
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[int]],
        num_classes: int,
        hidden: Sequence[int] = (300, 100),
        act_layer: type[nn.Module] | str = nn.Sigmoid,
    ) -> None:
        super().__init__(shapes, num_classes, hidden, act_layer)
        self.first = nn.Linear(sum(n * d for n, d in self.shapes), self.hidden[0])
        self.rest = nn.Sequential(self.act_layer(), *mlp_layers([*self.hidden, num_classes], self.act_layer))

    @classmethod
    def from_mlp(cls, mlp: IntrospectiveMLP, shapes: Sequence[Sequence[int]]) -> RankOneMLP:
        """A RankOneMLP with ``mlp``'s weights (its input size must be ``sum(N * d)``)."""
        net = cls(shapes, mlp.num_classes, mlp.hidden, mlp.act_layer)
        state = mlp.state_dict()
        first = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("0.")}
        net.first.load_state_dict(first)
        rest = {f"{int(k.split('.', 1)[0]) - 1}.{k.split('.', 1)[1]}": v
                for k, v in state.items() if not k.startswith("0.")}
        net.rest.load_state_dict(rest)
        return net

    def first_layer(self, factors: Factors) -> torch.Tensor:
        """``W1 vec(sum_s delta_s h_s^T) + b1`` from the factors, ``(B, k)``."""
        k = self.first.out_features
        out = self.first.bias
        offset = 0
        for (delta, h), (n, d) in zip(factors.values(), self.shapes, strict=False):
            w = self.first.weight[:, offset : offset + n * d].view(k, n, d)
            offset += n * d
            batch, positions = delta.shape[:2]
            if n <= d:  # contract h first: (B*S, d) @ (d, k*n) -> (B, S, k, n), then with delta
                u = (h.reshape(-1, d) @ w.reshape(k * n, d).T).view(batch, positions, k, n)
                out = out + (u * delta.unsqueeze(2)).sum((1, 3))
            else:  # contract delta first: (B*S, n) @ (n, k*d)
                v = (delta.reshape(-1, n) @ w.permute(1, 0, 2).reshape(n, k * d)).view(batch, positions, k, d)
                out = out + (v * h.unsqueeze(2)).sum((1, 3))
        return out

@register_net("factorized")
class FactorizedMLP(_FactoredMLP):
    """H whose first layer has rank-one rows: ``y_j = sum_s (A delta_s)_j (B h_s)_j + b_j``.

    Cost O(rank (N + d)) per position instead of O(rank N d).

    Args:
        shapes: ``(N, d)`` of each classifier layer, in the head's order.
        num_classes: output classes.
        rank: width of the factorized first layer.
        hidden: widths of the dense layers after it.
        act_layer: activation between layers.
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[int]],
        num_classes: int,
        rank: int = 300,
        hidden: Sequence[int] = (100,),
        act_layer: type[nn.Module] | str = nn.Sigmoid,
    ) -> None:
        super().__init__(shapes, num_classes, hidden, act_layer)
        self.rank = rank
        self.delta_proj = nn.ParameterList([nn.Parameter(torch.randn(rank, n) / math.sqrt(n)) for n, _ in self.shapes])
        self.h_proj = nn.ParameterList([nn.Parameter(torch.randn(rank, d) / math.sqrt(d)) for _, d in self.shapes])
        self.bias = nn.Parameter(torch.zeros(rank))
        self.rest = nn.Sequential(self.act_layer(), *mlp_layers([rank, *self.hidden, num_classes], self.act_layer))

    def first_layer(self, factors: Factors) -> torch.Tensor:
        out = self.bias
        for (delta, h), a, b in zip(factors.values(), self.delta_proj, self.h_proj, strict=False):
            out = out + ((delta @ a.T) * (h @ b.T)).sum(1)
        return out

    def no_weight_decay(self) -> set[str]:
        """Parameters trained without weight decay: L2 on both factors of a product pulls them to zero
        together (the first layer then stays at its bias), so A, B and the bias are left free."""
        return {"delta_proj", "h_proj", "bias"}

    @torch.no_grad()
    def to_materialized(self) -> IntrospectiveMLP:
        """The equal :class:`IntrospectiveMLP` over materialized r_x: first-layer rows ``A[j] (x) B[j]``."""
        mlp = IntrospectiveMLP(sum(n * d for n, d in self.shapes), self.num_classes, (self.rank, *self.hidden),
                               self.act_layer)
        rows = [(a[:, :, None] * b[:, None, :]).flatten(1) for a, b in zip(self.delta_proj, self.h_proj, strict=False)]
        mlp[0].weight.copy_(torch.cat(rows, 1))
        mlp[0].bias.copy_(self.bias)
        rest = {f"{int(k.split('.', 1)[0]) + 1}.{k.split('.', 1)[1]}": v for k, v in self.rest.state_dict().items()}
        mlp.load_state_dict({"0.weight": mlp[0].weight, "0.bias": mlp[0].bias, **rest})
        return mlp

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rank": self.rank}
