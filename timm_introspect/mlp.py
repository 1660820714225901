"""H, the introspective network: the paper's MLP over flattened introspective features."""

from __future__ import annotations

from typing import Sequence

from torch import nn

__all__ = ["IntrospectiveMLP"]


class IntrospectiveMLP(nn.Sequential):
    """MLP with sigmoid between layers: ``F -> 300 -> 100 -> N`` by default (paper, Table 3).

    Args:
        in_features: size of the flat introspective features (``N * d`` for one linear classifier).
        num_classes: N, the number of classes of f.
        hidden: widths of the hidden layers.
        act_layer: activation between layers.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (300, 100),
        act_layer: type[nn.Module] = nn.Sigmoid,
    ) -> None:
        widths = [in_features, *hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), act_layer()]
        layers.append(nn.Linear(widths[-1], num_classes))
        super().__init__(*layers)
        self.in_features = in_features
        self.num_classes = num_classes
        self.hidden = tuple(hidden)
        self.act_layer = act_layer
